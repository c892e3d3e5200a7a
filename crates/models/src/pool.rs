//! 2x2 max-pooling: our own kernel on flex, strided views elsewhere at inference.
//!
//! flex pools through a generic kernel that was 17% of a LeNet-5 training step and about 30%
//! of its batch-32 inference (`perf`, issue 13). For the common case (a 2x2 window, stride 2,
//! no padding, even height and width) `kernels::max_pool_2x2` computes the same values and
//! gradients, ties included, in a loop specialised to it, in training and inference. On other
//! backends, inference uses the four strided views `max(max(a, b), max(c, d))` (the same
//! function, vectorised element-wise work) and training burn's pooling. Other square windows
//! (ResNet's 3x3, stride-2, padding-1 stem pool) run `kernels::max_pool_window` on flex.

use burn::nn::pool::MaxPool2d;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::s;

/// `pool` applied to `x`, through a faster formulation of the same function where one exists.
///
/// # Shapes
/// - input: `[batch, channels, height, width]`
/// - output: `[batch, channels, height / 2, width / 2]` (the 2x2, stride-2 case)
pub(crate) fn max_pool(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, height, width] = x.dims();
    let two_by_two = pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && pool.dilation == [1, 1]
        && matches!(pool.padding, PaddingConfig2d::Valid)
        && height % 2 == 0
        && width % 2 == 0;
    if !two_by_two {
        return square_window(pool)
            .and_then(|[kernel, stride, padding]| {
                kernels::max_pool_window(&x, kernel, stride, padding)
            })
            .unwrap_or_else(|| pool.forward(x));
    }
    if let Some(pooled) = kernels::max_pool_2x2(&x) {
        return pooled;
    }
    if x.device().is_autodiff() {
        return pool.forward(x);
    }
    let a = x.clone().slice(s![.., .., 0..;2, 0..;2]); // [batch, channels, h/2, w/2]
    let b = x.clone().slice(s![.., .., 0..;2, 1..;2]);
    let c = x.clone().slice(s![.., .., 1..;2, 0..;2]);
    let d = x.slice(s![.., .., 1..;2, 1..;2]);
    a.max_pair(b).max_pair(c.max_pair(d))
}

/// `[kernel, stride, padding]` of a pooling with square windows, one stride, symmetric
/// explicit padding (or none) and no dilation (ResNet's 3x3, stride-2, padding-1 stem pool).
fn square_window(pool: &MaxPool2d) -> Option<[usize; 3]> {
    let [kh, kw] = pool.kernel_size;
    let [sy, sx] = pool.stride;
    let padding = match pool.padding {
        PaddingConfig2d::Valid => 0,
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == left && top == bottom && top == right =>
        {
            top
        }
        _ => return None,
    };
    (kh == kw && sy == sx && pool.dilation == [1, 1]).then_some([kh, sy, padding])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::Distribution;

    #[test]
    fn inference_pooling_equals_burns_exactly() {
        let device = Device::flex();
        device.seed(3);
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let x = Tensor::<4>::random([3, 4, 8, 6], Distribution::Normal(0.0, 1.0), &device);
        // Ties too: a ReLU'd input has many equal zeros.
        let x = burn::tensor::activation::relu(x);
        assert_eq!(
            max_pool(&pool, x.clone()).into_data(),
            pool.forward(x).into_data()
        );
    }

    #[test]
    fn odd_sizes_and_training_pool_with_gradients() {
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let x = Tensor::<4>::ones([1, 1, 5, 5], &Device::flex());
        assert_eq!(max_pool(&pool, x).dims(), [1, 1, 2, 2]);
        let x = Tensor::<4>::ones([1, 1, 4, 4], &Device::flex().autodiff()).require_grad();
        let y = max_pool(&pool, x.clone());
        let grads = y.sum().backward();
        assert_eq!(x.grad(&grads).unwrap().dims(), [1, 1, 4, 4]);
    }
}

//! One graph per architecture, each the forward pass of its model in `models` written as ONNX
//! nodes, point for point: every `tap.probe` there is a [`Builder::point`] here, with the same
//! name, so a `.qnt` file's activation grids land where the simulation applied them. A change
//! to a forward pass must change its graph here; the tests run both on the same inputs.

use models::{ModelSpec, StemLayout};

use crate::graph::{Builder, ConvGeometry};
use crate::ExportError;

/// ReLU6's clip.
const RELU6: (f32, f32) = (0.0, 6.0);

/// The logits of the model `b`'s source describes, from the input `x`.
///
/// # Shapes
/// - input: `[batch, c, h, w]`; output: `[batch, classes]`
pub(crate) fn graph(b: &mut Builder, x: &str) -> Result<String, ExportError> {
    // `models::Model::forward_tapped`'s input point (a grid only when the input is quantized).
    let x = &b.point(models::INPUT_POINT, x)?;
    match &b.spec() {
        ModelSpec::Mlp { hidden, .. } => {
            let x = b.flatten(x, "flatten");
            linear_stack(b, &x, "layers", hidden.len() + 1)
        }
        ModelSpec::LeNet5 { .. } => lenet(b, x),
        ModelSpec::Vgg { stages, fc, .. } => vgg(b, x, stages, fc.len() + 1),
        ModelSpec::Resnet { stem_layout, .. } => resnet(b, x, *stem_layout),
        ModelSpec::MobilenetV2 { .. } => mobilenet(b, x),
    }
}

/// `models::linear_stack::forward`: `layers` linear layers `{prefix}.{i}`, ReLU after all but
/// the last, each output a point.
fn linear_stack(
    b: &mut Builder,
    x: &str,
    prefix: &str,
    layers: usize,
) -> Result<String, ExportError> {
    let mut x = x.to_string();
    for i in 0..layers {
        let name = format!("{prefix}.{i}");
        x = b.linear(&x, &name)?;
        if i + 1 < layers {
            x = b.relu(&x, &format!("{name}.relu"));
        }
        x = b.point(&name, &x)?;
    }
    Ok(x)
}

/// `models::LeNet5::forward`.
fn lenet(b: &mut Builder, x: &str) -> Result<String, ExportError> {
    let mut x = x.to_string();
    for (name, padding) in [("conv1", 2), ("conv2", 0)] {
        x = b.conv_bn(&x, name, ConvGeometry::new(1, padding))?;
        x = b.relu(&x, &format!("{name}.relu"));
        x = b.max_pool(&x, 2, 2, 0, &format!("{name}.pool"));
        x = b.point(name, &x)?;
    }
    let mut x = b.flatten(&x, "flatten");
    for (name, relu) in [("fc1", true), ("fc2", true), ("fc3", false)] {
        x = b.linear(&x, name)?;
        if relu {
            x = b.relu(&x, &format!("{name}.relu"));
        }
        x = b.point(name, &x)?;
    }
    Ok(x)
}

/// `models::Vgg::forward`.
fn vgg(b: &mut Builder, x: &str, stages: &[Vec<usize>], fc: usize) -> Result<String, ExportError> {
    let mut x = x.to_string();
    for (s, stage) in stages.iter().enumerate() {
        for i in 0..stage.len() {
            let name = format!("stages.{s}.{i}");
            x = b.conv_bn(&x, &name, ConvGeometry::new(1, 1))?;
            x = b.relu(&x, &format!("{name}.relu"));
            x = b.point(&format!("{name}.relu"), &x)?;
        }
        x = b.max_pool(&x, 2, 2, 0, &format!("stages.{s}.pool"));
        x = b.point(&format!("stages.{s}"), &x)?;
    }
    let x = b.flatten(&x, "flatten");
    linear_stack(b, &x, "fc", fc)
}

/// `models::ResNet::forward` and `BasicBlock::forward`.
fn resnet(b: &mut Builder, x: &str, layout: StemLayout) -> Result<String, ExportError> {
    let (_, stride, padding) = layout.conv();
    let x = b.conv_bn(x, "stem", ConvGeometry::new(stride, padding))?;
    let mut x = b.relu(&x, "stem.relu");
    if layout == StemLayout::Imagenet {
        x = b.max_pool(&x, 3, 2, 1, "stem.pool");
    }
    let mut x = b.point("stem", &x)?;
    for (i, block) in b.spec().resnet_blocks().iter().enumerate() {
        let name = format!("blocks.{i}");
        let shortcut = match block.projection {
            true => b.conv_bn(
                &x,
                &format!("{name}.projection"),
                ConvGeometry::new(block.stride, 0),
            )?,
            false => x.clone(),
        };
        let y = b.conv_bn(
            &x,
            &format!("{name}.conv1"),
            ConvGeometry::new(block.stride, 1),
        )?;
        let y = b.relu(&y, &format!("{name}.conv1.relu"));
        let y = b.point(&format!("{name}.conv1.relu"), &y)?;
        let y = b.conv_bn(&y, &format!("{name}.conv2"), ConvGeometry::new(1, 1))?;
        let y = b.node("Add", &[&y, &shortcut], vec![], &format!("{name}.add"));
        let y = b.relu(&y, &format!("{name}.relu"));
        x = b.point(&name, &y)?;
    }
    let x = b.global_average(&x, "pool");
    let x = b.point("pool", &x)?;
    let x = b.linear(&x, "fc")?;
    b.point("fc", &x)
}

/// `min(max(x, 0), 6)`, then the point, whose grid a quantized file fixed at the clip.
fn relu6_point(b: &mut Builder, x: &str, point: &str) -> Result<String, ExportError> {
    let (lo, hi) = RELU6;
    let y = b.clip(x, lo, hi, &format!("{point}.relu6"));
    b.point(point, &y)
}

/// `models::MobileNetV2::forward` and `InvertedResidual::forward`.
fn mobilenet(b: &mut Builder, x: &str) -> Result<String, ExportError> {
    let x = b.conv_bn(x, "stem", ConvGeometry::new(2, 1))?;
    let mut x = relu6_point(b, &x, "stem")?;
    for (i, block) in b.spec().mobilenet_blocks().iter().enumerate() {
        let name = format!("blocks.{i}");
        let mut y = x.clone();
        if block.expand {
            y = b.conv_bn(&y, &format!("{name}.expand"), ConvGeometry::new(1, 0))?;
            y = relu6_point(b, &y, &format!("{name}.expand.relu6"))?;
        }
        let depthwise = ConvGeometry {
            groups: block.hidden,
            ..ConvGeometry::new(block.stride, 1)
        };
        y = b.conv_bn(&y, &format!("{name}.depthwise"), depthwise)?;
        y = relu6_point(b, &y, &format!("{name}.depthwise.relu6"))?;
        y = b.conv_bn(&y, &format!("{name}.project"), ConvGeometry::new(1, 0))?;
        if block.residual {
            y = b.node("Add", &[&y, &x], vec![], &format!("{name}.add"));
        }
        x = b.point(&name, &y)?;
    }
    let x = b.conv_bn(&x, "head", ConvGeometry::new(1, 0))?;
    let x = relu6_point(b, &x, "head")?;
    let x = b.global_average(&x, "pool");
    let x = b.linear(&x, "classifier")?;
    b.point("classifier", &x)
}

//! The model enum every stage trains, saves, loads and measures.

use burn::prelude::*;

use crate::file::ModelFileError;
use crate::groups::ChannelGroup;
use crate::lenet::LeNet5;
use crate::linear_stack;
use crate::mlp::Mlp;
use crate::mobilenet::MobileNetV2;
use crate::resnet::ResNet;
use crate::spec::{InputShape, ModelSpec, SpecError};
use crate::tap::Tap;
use crate::vgg::Vgg;

/// One of the architectures. Few models live at once, so the size difference between
/// variants (LeNet-5 holds its layers inline) costs nothing worth a `Box`.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Mlp(Mlp),
    LeNet5(LeNet5),
    Vgg(Vgg),
    ResNet(ResNet),
    MobileNetV2(MobileNetV2),
}

impl Model {
    /// Builds `spec` for `input`, with weights drawn from the device's RNG (seed it first for
    /// reproducible initialisation).
    pub fn new(spec: &ModelSpec, input: &InputShape, device: &Device) -> Result<Self, SpecError> {
        spec.validate(input)?;
        let size = [input.height, input.width];
        Ok(match spec {
            ModelSpec::Mlp {
                hidden,
                dropout,
                input_dropout,
            } => Model::Mlp(Mlp::new(
                input.channels * input.height * input.width,
                hidden,
                input.classes,
                *dropout,
                *input_dropout,
                device,
            )),
            ModelSpec::LeNet5 { channels, fc } => Model::LeNet5(LeNet5::new(
                input.channels,
                size,
                *channels,
                *fc,
                input.classes,
                device,
            )),
            ModelSpec::Vgg {
                stages,
                fc,
                dropout,
            } => Model::Vgg(Vgg::new(
                input.channels,
                size,
                stages,
                fc,
                *dropout,
                input.classes,
                device,
            )),
            ModelSpec::Resnet {
                stem, stem_layout, ..
            } => Model::ResNet(ResNet::new(
                input.channels,
                (*stem, *stem_layout),
                &spec.resnet_blocks(),
                input.classes,
                device,
            )),
            ModelSpec::MobilenetV2 { .. } => Model::MobileNetV2(MobileNetV2::new(
                input.channels,
                spec,
                input.classes,
                device,
            )),
        })
    }

    /// The spec of this model as its tensors stand (after pruning, the narrower widths), so a
    /// saved model or checkpoint describes itself. Built with [`Model::new`] for the same
    /// input, it gives a model of exactly these shapes.
    pub fn spec(&self) -> ModelSpec {
        match self {
            Model::Mlp(m) => ModelSpec::Mlp {
                hidden: linear_stack::hidden_widths(&m.layers),
                dropout: m.dropout.prob,
                input_dropout: m.input_dropout.prob,
            },
            Model::LeNet5(m) => ModelSpec::LeNet5 {
                channels: [
                    crate::dims(&m.conv1.conv.weight)[0],
                    crate::dims(&m.conv2.conv.weight)[0],
                ],
                fc: [crate::dims(&m.fc1.weight)[1], crate::dims(&m.fc2.weight)[1]],
            },
            Model::Vgg(m) => ModelSpec::Vgg {
                stages: m
                    .stages
                    .iter()
                    .map(|s| s.iter().map(|c| crate::dims(&c.conv.weight)[0]).collect())
                    .collect(),
                fc: linear_stack::hidden_widths(&m.fc),
                dropout: m.dropout.prob,
            },
            Model::ResNet(m) => m.spec(),
            Model::MobileNetV2(m) => m.spec(),
        }
    }

    /// A copy of this model with the same weights on `device`, e.g. its autodiff twin for
    /// training (a parent's weights a stage starts from, or a profile's training step).
    pub fn copy_to(&self, input: &InputShape, device: &Device) -> Result<Self, ModelFileError> {
        let path = std::path::PathBuf::from("<in memory>");
        Model::new(&self.spec(), input, device)
            .map_err(|source| ModelFileError::Spec {
                path: path.clone(),
                source,
            })?
            .try_load_record(self.clone().into_record())
            .map_err(|e| ModelFileError::Mismatch {
                path,
                message: e.to_string(),
            })
    }

    /// The device the model's parameters live on.
    pub fn device(&self) -> Device {
        self.devices().into_iter().next().unwrap_or_default()
    }

    /// The architecture's `kind`, as written in configs.
    pub fn kind(&self) -> &'static str {
        match self {
            Model::Mlp(_) => "mlp",
            Model::LeNet5(_) => "lenet5",
            Model::Vgg(_) => "vgg",
            Model::ResNet(_) => "resnet",
            Model::MobileNetV2(_) => "mobilenet-v2",
        }
    }

    /// # Shapes
    /// - input: `[batch, channels, height, width]`, normalised pixels
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_tapped(x, &mut Tap::none())
    }

    /// A forward pass that also captures the activation `tap` names (see [`Model::taps`]).
    ///
    /// # Shapes
    /// - input: `[batch, channels, height, width]`
    /// - output: `[batch, classes]` logits; `tap.found`: `[batch, features]`
    pub fn forward_tapped(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        let x = tap.input(x);
        match self {
            Model::Mlp(m) => m.forward(x, tap),
            Model::LeNet5(m) => m.forward(x, tap),
            Model::Vgg(m) => m.forward(x, tap),
            Model::ResNet(m) => m.forward(x, tap),
            Model::MobileNetV2(m) => m.forward(x, tap),
        }
    }

    /// Features per sample at tap `name`, or `None` when the model has no such tap.
    pub fn tap_width(&self, name: &str, input: &InputShape, device: &Device) -> Option<usize> {
        let mut tap = Tap::at(name);
        let x = Tensor::<4>::zeros([1, input.channels, input.height, input.width], device);
        self.forward_tapped(x, &mut tap);
        tap.found.map(|f| f.dims()[1])
    }

    /// Names of the points whose activations [`Model::forward_tapped`] can capture.
    pub fn taps(&self) -> Vec<String> {
        self.spec().taps()
    }

    /// Multiply-accumulates of one forward pass for one sample (convolutions and linear
    /// layers; BatchNorm, pooling and activations are not counted, as is customary).
    pub fn macs(&self, input: &InputShape) -> u64 {
        let size = [input.height, input.width];
        match self {
            Model::Mlp(m) => m.macs(),
            Model::LeNet5(m) => m.macs(size),
            Model::Vgg(m) => m.macs(size),
            Model::ResNet(m) => m.macs(size),
            Model::MobileNetV2(m) => m.macs(size),
        }
    }

    /// The prunable channel groups (see [`ChannelGroup`]).
    pub fn channel_groups(&self, input: &InputShape) -> Vec<ChannelGroup> {
        match self {
            Model::Mlp(m) => mlp_groups(m),
            Model::LeNet5(m) => lenet_groups(m),
            Model::Vgg(m) => vgg_groups(m, input),
            Model::ResNet(m) => resnet_groups(m),
            Model::MobileNetV2(m) => mobilenet_groups(m),
        }
    }
}

fn linear_chain_groups(prefix: &str, layers: &[burn::nn::Linear]) -> Vec<ChannelGroup> {
    (0..layers.len().saturating_sub(1))
        .map(|i| {
            let width = crate::dims(&layers[i].weight)[1];
            ChannelGroup::new(format!("{prefix}.{i}"), width)
                .linear_output(&format!("{prefix}.{i}"))
                .linear_input(&format!("{prefix}.{}", i + 1), 1)
        })
        .collect()
}

fn mlp_groups(m: &Mlp) -> Vec<ChannelGroup> {
    linear_chain_groups("layers", &m.layers)
}

fn lenet_groups(m: &LeNet5) -> Vec<ChannelGroup> {
    let c1 = crate::dims(&m.conv1.conv.weight)[0];
    let c2 = crate::dims(&m.conv2.conv.weight)[0];
    let spatial = crate::dims(&m.fc1.weight)[0] / c2;
    vec![
        ChannelGroup::new("conv1", c1)
            .conv_bn_output("conv1")
            .conv_input("conv2"),
        ChannelGroup::new("conv2", c2)
            .conv_bn_output("conv2")
            .linear_input("fc1", spatial),
        ChannelGroup::new("fc1", crate::dims(&m.fc1.weight)[1])
            .linear_output("fc1")
            .linear_input("fc2", 1),
        ChannelGroup::new("fc2", crate::dims(&m.fc2.weight)[1])
            .linear_output("fc2")
            .linear_input("fc3", 1),
    ]
}

fn vgg_groups(m: &Vgg, input: &InputShape) -> Vec<ChannelGroup> {
    let convs: Vec<String> = m
        .stages
        .iter()
        .enumerate()
        .flat_map(|(s, stage)| (0..stage.len()).map(move |i| format!("stages.{s}.{i}")))
        .collect();
    let widths: Vec<usize> = m
        .stages
        .iter()
        .flatten()
        .map(|c| crate::dims(&c.conv.weight)[0])
        .collect();
    let shrink = 1 << m.stages.len();
    let spatial = (input.height / shrink) * (input.width / shrink);
    let mut groups: Vec<ChannelGroup> = convs
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let group = ChannelGroup::new(name.clone(), widths[i]).conv_bn_output(name);
            match convs.get(i + 1) {
                Some(next) => group.conv_input(next),
                None => group.linear_input("fc.0", spatial),
            }
        })
        .collect();
    groups.extend(linear_chain_groups("fc", &m.fc));
    groups
}

/// In a ResNet, every block of a stage adds into the same channels: the stage's output
/// channels form one group with all convs writing into that residual stream and all convs
/// reading from it. Each block's inner channels (conv1 -> conv2) form a group of their own.
fn resnet_groups(m: &ResNet) -> Vec<ChannelGroup> {
    let mut groups = Vec::new();
    let mut stream =
        ChannelGroup::new("stem", crate::dims(&m.stem.conv.weight)[0]).conv_bn_output("stem");
    for (b, block) in m.blocks.iter().enumerate() {
        let prefix = format!("blocks.{b}");
        let width = crate::dims(&block.conv2.conv.weight)[0];
        // A projection starts a new residual stream; without one the block adds into the
        // stream it reads.
        stream = stream.conv_input(&format!("{prefix}.conv1"));
        if block.projection.is_some() {
            stream = stream.conv_input(&format!("{prefix}.projection"));
            groups.push(stream);
            stream = ChannelGroup::new(format!("{prefix}.out"), width)
                .conv_bn_output(&format!("{prefix}.projection"));
        }
        stream = stream.conv_bn_output(&format!("{prefix}.conv2"));
        groups.push(
            ChannelGroup::new(
                format!("{prefix}.inner"),
                crate::dims(&block.conv1.conv.weight)[0],
            )
            .conv_bn_output(&format!("{prefix}.conv1"))
            .conv_input(&format!("{prefix}.conv2")),
        );
    }
    groups.push(stream.linear_input("fc", 1));
    groups
}

/// In a MobileNetV2, each block's expansion output, its depthwise convolution (one filter
/// per channel: output channels and BatchNorm only) and the projection's input are one group.
/// The first block has no expansion, so its depthwise convolution filters the stream it reads.
/// A residual block writes into the stream it reads: the blocks of such a run, the block that
/// started it and every reader of it (expansions, the head) share one group.
fn mobilenet_groups(m: &MobileNetV2) -> Vec<ChannelGroup> {
    let width = |c: &crate::ConvBn| crate::dims(&c.conv.weight)[0];
    let mut groups = Vec::new();
    // The channels the next block reads: the stem's output, then the last block's.
    let mut stream = ChannelGroup::new("stem", width(&m.stem)).conv_bn_output("stem");
    for (b, block) in m.blocks.iter().enumerate() {
        let prefix = format!("blocks.{b}");
        let (depthwise, project) = (format!("{prefix}.depthwise"), format!("{prefix}.project"));
        match &block.expand {
            Some(_) => {
                let expand = format!("{prefix}.expand");
                stream = stream.conv_input(&expand);
                groups.push(
                    ChannelGroup::new(format!("{prefix}.hidden"), width(&block.depthwise))
                        .conv_bn_output(&expand)
                        .conv_bn_output(&depthwise)
                        .conv_input(&project),
                );
            }
            None => stream = stream.conv_bn_output(&depthwise).conv_input(&project),
        }
        if block.residual {
            stream = stream.conv_bn_output(&project);
        } else {
            groups.push(stream);
            stream = ChannelGroup::new(format!("{prefix}.out"), width(&block.project))
                .conv_bn_output(&project);
        }
    }
    groups.push(stream.conv_input("head"));
    groups.push(
        ChannelGroup::new("head", width(&m.head))
            .conv_bn_output("head")
            .linear_input("classifier", 1),
    );
    groups
}

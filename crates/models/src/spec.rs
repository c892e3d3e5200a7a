//! Width specs: the serialisable description every model is built from.
//!
//! A spec holds only widths and switches; the input shape and class count come from the
//! dataset. A pruned model is the same spec with smaller widths, so it saves, loads and runs
//! like any other.

use serde::{Deserialize, Serialize};

/// An architecture and its widths. In TOML: `[model] kind = "lenet5"` plus the fields below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Fully connected network: flatten, then `hidden` ReLU layers, then the classifier.
    Mlp {
        /// Hidden layer widths, e.g. `[1200, 1200]`.
        hidden: Vec<usize>,
        /// Dropout probability after each hidden layer.
        #[serde(default)]
        dropout: f64,
        /// Dropout probability on the input pixels (Hinton et al. 2012 used 0.2).
        #[serde(default)]
        input_dropout: f64,
    },
    /// LeNet-5 (LeCun et al. 1998) with BatchNorm after each convolution.
    #[serde(rename = "lenet5")]
    LeNet5 {
        /// Output channels of the two 5x5 convolutions.
        #[serde(default = "lenet_channels")]
        channels: [usize; 2],
        /// Widths of the two hidden fully connected layers.
        #[serde(default = "lenet_fc")]
        fc: [usize; 2],
    },
    /// VGG-style: stages of 3x3 conv + BatchNorm + ReLU, a 2x2 max-pool after each stage,
    /// then fully connected layers (Simonyan & Zisserman 2015).
    Vgg {
        /// Conv widths per stage, e.g. `[[32, 32], [64, 64]]`.
        #[serde(default = "vgg_stages")]
        stages: Vec<Vec<usize>>,
        /// Hidden fully connected widths before the classifier.
        #[serde(default = "vgg_fc")]
        fc: Vec<usize>,
        #[serde(default)]
        dropout: f64,
    },
    /// ResNet (He et al. 2016): a stem, stages of basic blocks (two 3x3 convs with a residual
    /// add), stride 2 at the start of every stage after the first, global average pooling,
    /// then the classifier. With `stem_layout = "imagenet"` it is torchvision's ResNet-18/34
    /// (`stem = 64, stages = [64, 128, 256, 512], blocks = [2, 2, 2, 2]` or `[3, 4, 6, 3]`),
    /// and loads torchvision's `state_dict` keys as they are; with the default `"cifar"` stem
    /// and `stem = 16, stages = [16, 32, 64], blocks = n` it is the CIFAR ResNet-(6n+2)
    /// (ResNet-20: n = 3), with 1x1 projection shortcuts.
    Resnet {
        /// Width of the stem convolution.
        #[serde(default = "resnet_stem")]
        stem: usize,
        /// `"cifar"`: a 3x3 stride-1 stem (small inputs); `"imagenet"`: torchvision's 7x7
        /// stride-2 stem and 3x3 stride-2 max-pool.
        #[serde(default, skip_serializing_if = "StemLayout::is_cifar")]
        stem_layout: StemLayout,
        /// Width of each stage.
        #[serde(default = "resnet_stages")]
        stages: Vec<usize>,
        /// Basic blocks per stage: one number for every stage, or one per stage.
        #[serde(default)]
        blocks: BlockCounts,
        /// Inner width (the first conv's output) of every block, in order; empty means each
        /// block's stage width. Pruning narrows these block by block.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        inner: Vec<usize>,
        /// Whether each block has a 1x1 projection shortcut; empty means exactly where the
        /// width or the resolution changes. Kept explicit by pruned models, whose stage widths
        /// may come to coincide while the trained projection is still there.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        projection: Vec<bool>,
    },
    /// MobileNetV2 (Sandler et al. 2018) in torchvision's layout and key names: a 3x3
    /// stride-2 stem, 17 inverted residual blocks (1x1 expansion, 3x3 depthwise, linear 1x1
    /// projection), a 1x1 head, dropout, the classifier; ReLU6. torchvision's `state_dict`
    /// (`features.N...`, `classifier.1`) loads as it is.
    #[serde(rename = "mobilenet-v2")]
    MobilenetV2 {
        /// torchvision's `width_mult`: every width is its 1.0 width times this, rounded to a
        /// multiple of 8 (the head stays 1280 below 1.0).
        #[serde(default = "one_f64")]
        width_mult: f64,
        /// Dropout before the classifier (torchvision: 0.2).
        #[serde(default = "mobilenet_dropout")]
        dropout: f64,
        /// Explicit widths (a pruned model's); left out, `width_mult` gives them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        widths: Option<MobileWidths>,
    },
}

/// The widths of a MobileNetV2, block by block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileWidths {
    pub stem: usize,
    /// Each block's depthwise width (its expansion's output; the first block's is its input).
    pub hidden: Vec<usize>,
    /// Each block's output width.
    pub out: Vec<usize>,
    pub head: usize,
}

/// One stage of torchvision's MobileNetV2 table: expansion `t`, width `c`, `n` blocks, the
/// first with stride `s`.
#[derive(Debug, Clone, Copy)]
pub struct MobileStage {
    pub t: usize,
    pub c: usize,
    pub n: usize,
    pub s: usize,
}

/// Sandler et al.'s Table 2 (torchvision's `inverted_residual_setting`).
pub const MOBILENET_V2: [MobileStage; 7] = [
    MobileStage {
        t: 1,
        c: 16,
        n: 1,
        s: 1,
    },
    MobileStage {
        t: 6,
        c: 24,
        n: 2,
        s: 2,
    },
    MobileStage {
        t: 6,
        c: 32,
        n: 3,
        s: 2,
    },
    MobileStage {
        t: 6,
        c: 64,
        n: 4,
        s: 2,
    },
    MobileStage {
        t: 6,
        c: 96,
        n: 3,
        s: 1,
    },
    MobileStage {
        t: 6,
        c: 160,
        n: 3,
        s: 2,
    },
    MobileStage {
        t: 6,
        c: 320,
        n: 1,
        s: 1,
    },
];

/// One inverted residual block as a spec lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MobileBlock {
    pub c_in: usize,
    pub hidden: usize,
    pub c_out: usize,
    pub stride: usize,
    /// Whether it has a 1x1 expansion (expansion ratio above 1).
    pub expand: bool,
    /// Whether it adds its input to its output.
    pub residual: bool,
}

/// torchvision's `_make_divisible(v, 8)`: the nearest multiple of 8, at least 8, never more
/// than 10% below `v`.
pub fn make_divisible(v: f64) -> usize {
    let rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

fn one_f64() -> f64 {
    1.0
}
fn mobilenet_dropout() -> f64 {
    0.2
}

/// A ResNet's stem: what it does to the input before the first stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StemLayout {
    /// 3x3 conv, stride 1, padding 1 (He et al.'s CIFAR networks).
    #[default]
    Cifar,
    /// 7x7 conv, stride 2, padding 3, then a 3x3 max-pool, stride 2, padding 1 (torchvision).
    Imagenet,
}

impl StemLayout {
    pub fn is_cifar(&self) -> bool {
        *self == StemLayout::Cifar
    }

    /// The stem convolution's kernel, stride and padding.
    pub fn conv(self) -> (usize, usize, usize) {
        match self {
            StemLayout::Cifar => (3, 1, 1),
            StemLayout::Imagenet => (7, 2, 3),
        }
    }
}

/// Blocks per ResNet stage: `blocks = 3` (every stage) or `blocks = [3, 4, 6, 3]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BlockCounts {
    Each(usize),
    PerStage(Vec<usize>),
}

impl Default for BlockCounts {
    fn default() -> Self {
        BlockCounts::Each(1)
    }
}

impl BlockCounts {
    /// One count per stage of `stages` (a list of another length is cut or padded with 0,
    /// which validation refuses).
    pub fn per_stage(&self, stages: usize) -> Vec<usize> {
        match self {
            BlockCounts::Each(n) => vec![*n; stages],
            BlockCounts::PerStage(v) => (0..stages)
                .map(|s| v.get(s).copied().unwrap_or(0))
                .collect(),
        }
    }

    /// The short form of `counts`: one number when every stage has the same.
    pub fn of(counts: &[usize]) -> Self {
        match counts.first() {
            Some(&n) if counts.iter().all(|&c| c == n) => BlockCounts::Each(n),
            _ => BlockCounts::PerStage(counts.to_vec()),
        }
    }
}

fn lenet_channels() -> [usize; 2] {
    [6, 16]
}
fn lenet_fc() -> [usize; 2] {
    [120, 84]
}
fn vgg_stages() -> Vec<Vec<usize>> {
    vec![vec![32, 32], vec![64, 64]]
}
fn vgg_fc() -> Vec<usize> {
    vec![256]
}
fn resnet_stem() -> usize {
    16
}
fn resnet_stages() -> Vec<usize> {
    vec![16, 32, 64]
}

/// The shape of one input sample and the number of classes: what a spec is instantiated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl InputShape {
    /// The input a model with the recorded `preprocessing` reads, with `classes` outputs.
    pub fn read_by(preprocessing: &data::Preprocessing, classes: usize) -> Self {
        Self {
            channels: preprocessing.channels,
            height: preprocessing.height,
            width: preprocessing.width,
            classes,
        }
    }

    /// The input `prep` makes, with `classes` outputs.
    pub fn made_by(prep: &data::Preprocess, classes: usize) -> Self {
        Self {
            channels: prep.channels,
            height: prep.out_rows,
            width: prep.out_cols,
            classes,
        }
    }
}

/// One bad config value: its full dotted key, the value, and what is allowed. The one error
/// type of config validation, used by specs (keys under `model.`), the runner and every
/// technique's section.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key} = {value}: {allowed}")]
pub struct Invalid {
    pub key: String,
    pub value: String,
    pub allowed: String,
}

impl Invalid {
    pub fn new(key: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}

/// A spec that cannot be built (its key is under `model.`).
pub type SpecError = Invalid;

fn mul(a: u128, b: u128) -> u128 {
    a.saturating_mul(b)
}

/// Parameters of a linear layer: weights and bias.
fn linear(d_in: u128, d_out: u128) -> u128 {
    mul(d_in, d_out).saturating_add(d_out)
}

/// Parameters of a conv with BatchNorm: weights, plus gamma, beta and the two running
/// statistics.
fn conv_bn(c_in: u128, c_out: u128, k: u128) -> u128 {
    mul(mul(c_in, c_out), k * k).saturating_add(4 * c_out)
}

/// Parameters and per-sample activations of linear layers of `widths` from `d_in` features,
/// then the classifier to `classes`.
fn dense_chain(d_in: u128, widths: &[usize], classes: u128) -> (u128, u128) {
    let (mut params, mut acts, mut d) = (0u128, 0u128, d_in);
    for &width in widths {
        params = params.saturating_add(linear(d, width as u128));
        acts = acts.saturating_add(3 * width as u128);
        d = width as u128;
    }
    (params.saturating_add(linear(d, classes)), acts)
}

/// Every width at least 1.
fn check_positive(key: &str, widths: &[usize]) -> Result<(), SpecError> {
    if widths.contains(&0) {
        Err(spec_error(key, widths, "every width must be at least 1"))
    } else {
        Ok(())
    }
}

/// A dropout probability in [0, 1).
fn check_probability(key: &str, p: f64) -> Result<(), SpecError> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(spec_error(key, p, "a dropout probability in [0, 1)"))
    }
}

/// A VGG's stages: non-empty, and few enough that the image survives their halvings.
fn validate_vgg(
    stages: &[Vec<usize>],
    fc: &[usize],
    dropout: f64,
    input: &InputShape,
) -> Result<(), SpecError> {
    if stages.is_empty() || stages.iter().any(|s| s.is_empty()) {
        return Err(spec_error("stages", stages, "at least one non-empty stage"));
    }
    check_positive("stages", &stages.concat())?;
    check_positive("fc", fc)?;
    check_probability("dropout", dropout)?;
    let min = input.height.min(input.width);
    if min >> stages.len() == 0 {
        return Err(spec_error(
            "stages",
            stages,
            format!(
                "each stage halves the image; {} stages need at least {} pixels, \
                         the input has {min}",
                stages.len(),
                1 << stages.len()
            ),
        ));
    }
    Ok(())
}

fn spec_error(key: &str, value: impl std::fmt::Debug, allowed: impl Into<String>) -> SpecError {
    Invalid::new(&format!("model.{key}"), format!("{value:?}"), allowed)
}

/// What a spec holds and computes, counted before it is built (see [`ModelSpec::footprint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters and buffers (BatchNorm running statistics included), as burn counts them.
    pub params: u128,
    /// Activation values per sample kept for the backward pass (an estimate).
    pub activations_per_sample: u128,
}

impl Footprint {
    /// Bytes to train with `batch` samples per step: f32 weights, gradients and two optimiser
    /// moments, plus the activations and their gradients.
    pub fn training_bytes(&self, batch: usize) -> u128 {
        let weights = self.params.saturating_mul(4 * 4);
        let activations = self
            .activations_per_sample
            .saturating_mul(batch as u128)
            .saturating_mul(4 * 2);
        weights.saturating_add(activations)
    }

    /// Bytes to run inference on `batch` samples: f32 weights and the activations (an upper
    /// bound: not every layer's output is alive at once).
    pub fn inference_bytes(&self, batch: usize) -> u128 {
        let weights = self.params.saturating_mul(4);
        let activations = self
            .activations_per_sample
            .saturating_mul(batch as u128)
            .saturating_mul(4);
        weights.saturating_add(activations)
    }
}

/// One ResNet basic block as a spec lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResnetBlock {
    pub c_in: usize,
    pub inner: usize,
    pub c_out: usize,
    pub stride: usize,
    pub projection: bool,
}

impl ResnetBlock {
    /// A shortcut without projection only works when shape is kept.
    pub fn needs_projection(&self) -> bool {
        self.stride != 1 || self.c_in != self.c_out
    }
}

impl ModelSpec {
    /// A MobileNetV2's widths: the explicit ones, else torchvision's at `width_mult`.
    pub fn mobilenet_widths(&self) -> MobileWidths {
        let (width_mult, widths) = match self {
            ModelSpec::MobilenetV2 {
                width_mult, widths, ..
            } => (*width_mult, widths),
            _ => (1.0, &None),
        };
        if let Some(w) = widths {
            return w.clone();
        }
        let stem = make_divisible(32.0 * width_mult);
        let (mut hidden, mut out) = (Vec::new(), Vec::new());
        let mut c_in = stem;
        for stage in MOBILENET_V2 {
            let c = make_divisible(stage.c as f64 * width_mult);
            for _ in 0..stage.n {
                hidden.push(c_in * stage.t);
                out.push(c);
                c_in = c;
            }
        }
        MobileWidths {
            stem,
            hidden,
            out,
            head: make_divisible(1280.0 * width_mult.max(1.0)),
        }
    }

    /// The blocks of a MobileNetV2 spec in order (empty for other kinds). Strides, expansions
    /// and residual adds come from the table at the unpruned widths, as torchvision decides
    /// them; the widths from [`Self::mobilenet_widths`].
    pub fn mobilenet_blocks(&self) -> Vec<MobileBlock> {
        let ModelSpec::MobilenetV2 { width_mult, .. } = self else {
            return Vec::new();
        };
        let nominal = ModelSpec::MobilenetV2 {
            width_mult: *width_mult,
            dropout: 0.0,
            widths: None,
        }
        .mobilenet_widths();
        let widths = self.mobilenet_widths();
        let mut out = Vec::new();
        for stage in MOBILENET_V2 {
            for b in 0..stage.n {
                let i = out.len();
                let nominal_in = if i == 0 {
                    nominal.stem
                } else {
                    nominal.out[i - 1]
                };
                let stride = if b == 0 { stage.s } else { 1 };
                out.push(MobileBlock {
                    c_in: if i == 0 {
                        widths.stem
                    } else {
                        widths.out[i - 1]
                    },
                    hidden: widths.hidden[i],
                    c_out: widths.out[i],
                    stride,
                    expand: stage.t != 1,
                    residual: stride == 1 && nominal_in == nominal.out[i],
                });
            }
        }
        out
    }

    /// The blocks of a ResNet spec in order (empty for other kinds): stride 2 at the start of
    /// every stage after the first, inner widths and projections from the explicit lists when
    /// given.
    pub fn resnet_blocks(&self) -> Vec<ResnetBlock> {
        let ModelSpec::Resnet {
            stem,
            stages,
            blocks,
            inner,
            projection,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut c_in = *stem;
        let counts = blocks.per_stage(stages.len());
        for (s, &width) in stages.iter().enumerate() {
            for b in 0..counts[s] {
                let i = out.len();
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let mut block = ResnetBlock {
                    c_in,
                    inner: inner.get(i).copied().unwrap_or(width),
                    c_out: width,
                    stride,
                    projection: false,
                };
                block.projection = projection
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| block.needs_projection());
                out.push(block);
                c_in = width;
            }
        }
        out
    }

    /// How torchvision names this ResNet's parameters, as `key_map` pairs (regex, our name):
    /// `conv1`/`bn1` the stem, `layer{s}.{b}.conv1`/`bn1`/`conv2`/`bn2` and
    /// `downsample.0`/`downsample.1` each block, `fc` the classifier. Empty for other kinds. A
    /// PyTorch file loaded for a ResNet with no `key_map` of its own is read through these, so
    /// `torchvision.models.resnet18(num_classes=10).state_dict()` loads as it is.
    pub fn torchvision_key_map(&self) -> Vec<[String; 2]> {
        let pair = |from: String, to: String| [format!("^{from}\\.(.+)$"), format!("{to}.$1")];
        if let ModelSpec::MobilenetV2 { .. } = self {
            return self.mobilenet_key_map(&pair);
        }
        let ModelSpec::Resnet { stages, blocks, .. } = self else {
            return Vec::new();
        };
        let mut map = vec![
            pair("conv1".into(), "stem.conv".into()),
            pair("bn1".into(), "stem.bn".into()),
        ];
        let mut i = 0;
        for (s, &count) in blocks.per_stage(stages.len()).iter().enumerate() {
            for b in 0..count {
                let theirs = format!("layer{}\\.{b}", s + 1);
                for (from, to) in [
                    ("conv1", "conv1.conv"),
                    ("bn1", "conv1.bn"),
                    ("conv2", "conv2.conv"),
                    ("bn2", "conv2.bn"),
                    ("downsample\\.0", "projection.conv"),
                    ("downsample\\.1", "projection.bn"),
                ] {
                    map.push(pair(
                        format!("{theirs}\\.{from}"),
                        format!("blocks.{i}.{to}"),
                    ));
                }
                i += 1;
            }
        }
        map
    }

    /// torchvision's MobileNetV2 names: `features.0.{0,1}` the stem's conv and BatchNorm,
    /// `features.{b+1}.conv.*` block `b` (`0.0`/`0.1` the expansion or, in the first block,
    /// the depthwise conv; then the depthwise, the projection and its BatchNorm),
    /// `features.18.{0,1}` the head, `classifier.1` the classifier.
    fn mobilenet_key_map(&self, pair: &dyn Fn(String, String) -> [String; 2]) -> Vec<[String; 2]> {
        let mut map = vec![
            pair("features\\.0\\.0".into(), "stem.conv".into()),
            pair("features\\.0\\.1".into(), "stem.bn".into()),
            pair("classifier\\.1".into(), "classifier".into()),
        ];
        let blocks = self.mobilenet_blocks();
        for (b, block) in blocks.iter().enumerate() {
            let theirs = |part: &str| format!("features\\.{}\\.conv\\.{part}", b + 1);
            let ours = |part: &str| format!("blocks.{b}.{part}");
            let names: &[(&str, &str)] = match block.expand {
                true => &[
                    ("0\\.0", "expand.conv"),
                    ("0\\.1", "expand.bn"),
                    ("1\\.0", "depthwise.conv"),
                    ("1\\.1", "depthwise.bn"),
                    ("2", "project.conv"),
                    ("3", "project.bn"),
                ],
                false => &[
                    ("0\\.0", "depthwise.conv"),
                    ("0\\.1", "depthwise.bn"),
                    ("1", "project.conv"),
                    ("2", "project.bn"),
                ],
            };
            for (from, to) in names {
                map.push(pair(theirs(from), ours(to)));
            }
        }
        let head = blocks.len() + 1;
        map.push(pair(format!("features\\.{head}\\.0"), "head.conv".into()));
        map.push(pair(format!("features\\.{head}\\.1"), "head.bn".into()));
        map
    }

    /// What a model of this spec holds and computes per sample, counted from the widths
    /// alone (nothing is allocated), so a spec too large for memory is refused before it is
    /// built. Saturating arithmetic: absurd widths give huge numbers, never an overflow.
    pub fn footprint(&self, input: &InputShape) -> Footprint {
        let (c, h, w) = (
            input.channels as u128,
            input.height as u128,
            input.width as u128,
        );
        let classes = input.classes as u128;
        let mut params: u128 = 0;
        // Activation values kept per sample for the backward pass (a few per layer).
        let mut acts: u128 = c * h * w;
        match self {
            ModelSpec::Mlp { hidden, .. } => {
                let (p, a) = dense_chain(c * h * w, hidden, classes);
                (params, acts) = (p, acts.saturating_add(a));
            }
            ModelSpec::LeNet5 { channels, fc } => {
                let [c1, c2] = channels.map(|x| x as u128);
                let (h2, w2) = ((h / 2).saturating_sub(4) / 2, (w / 2).saturating_sub(4) / 2);
                params = conv_bn(c, c1, 5)
                    .saturating_add(conv_bn(c1, c2, 5))
                    .saturating_add(linear(mul(c2, h2 * w2), fc[0] as u128))
                    .saturating_add(linear(fc[0] as u128, fc[1] as u128))
                    .saturating_add(linear(fc[1] as u128, classes));
                acts = acts
                    .saturating_add(mul(4 * c1, h * w))
                    .saturating_add(mul(4 * c2, (h / 2) * (w / 2)))
                    .saturating_add(3 * (fc[0] + fc[1]) as u128);
            }
            ModelSpec::Vgg { stages, fc, .. } => {
                let (mut c_in, mut hs, mut ws) = (c, h, w);
                for stage in stages {
                    for &width in stage {
                        params = params.saturating_add(conv_bn(c_in, width as u128, 3));
                        acts = acts.saturating_add(mul(4 * width as u128, hs * ws));
                        c_in = width as u128;
                    }
                    (hs, ws) = (hs / 2, ws / 2);
                }
                let (p, a) = dense_chain(mul(c_in, hs * ws), fc, classes);
                (params, acts) = (params.saturating_add(p), acts.saturating_add(a));
            }
            ModelSpec::Resnet { .. } => {
                let (p, a) = self.resnet_footprint((c, h, w), classes);
                (params, acts) = (p, acts.saturating_add(a));
            }
            ModelSpec::MobilenetV2 { .. } => {
                let (p, a) = self.mobilenet_footprint((c, h, w), classes);
                (params, acts) = (p, acts.saturating_add(a));
            }
        }
        Footprint {
            params,
            activations_per_sample: acts,
        }
    }

    /// A ResNet's parameters and activations per sample (see [`Self::footprint`]).
    fn resnet_footprint(&self, (c, h, w): (u128, u128, u128), classes: u128) -> (u128, u128) {
        let ModelSpec::Resnet {
            stem, stem_layout, ..
        } = self
        else {
            return (0, 0);
        };
        let (k, stride, _) = stem_layout.conv();
        let mut params = conv_bn(c, *stem as u128, k as u128);
        let (mut hs, mut ws) = (h.div_ceil(stride as u128), w.div_ceil(stride as u128));
        let mut acts = mul(4 * *stem as u128, hs * ws);
        if *stem_layout == StemLayout::Imagenet {
            (hs, ws) = (hs.div_ceil(2), ws.div_ceil(2));
        }
        for b in self.resnet_blocks() {
            if b.stride == 2 {
                (hs, ws) = (hs.div_ceil(2), ws.div_ceil(2));
            }
            let (c_in, inner, c_out) = (b.c_in as u128, b.inner as u128, b.c_out as u128);
            params = params
                .saturating_add(conv_bn(c_in, inner, 3))
                .saturating_add(conv_bn(inner, c_out, 3));
            if b.projection {
                params = params.saturating_add(conv_bn(c_in, c_out, 1));
            }
            acts = acts.saturating_add(mul(4 * (inner + 2 * c_out), hs * ws));
        }
        let last = self.resnet_blocks().last().map_or(*stem, |b| b.c_out);
        (params.saturating_add(linear(last as u128, classes)), acts)
    }

    /// A MobileNetV2's parameters and activations per sample (see [`Self::footprint`]).
    fn mobilenet_footprint(&self, (c, h, w): (u128, u128, u128), classes: u128) -> (u128, u128) {
        let widths = self.mobilenet_widths();
        let mut params = conv_bn(c, widths.stem as u128, 3);
        let (mut hs, mut ws) = (h.div_ceil(2), w.div_ceil(2));
        let mut acts = mul(4 * widths.stem as u128, hs * ws);
        for b in self.mobilenet_blocks() {
            let (c_in, hidden, c_out) = (b.c_in as u128, b.hidden as u128, b.c_out as u128);
            if b.expand {
                params = params.saturating_add(conv_bn(c_in, hidden, 1));
                acts = acts.saturating_add(mul(4 * hidden, hs * ws));
            }
            (hs, ws) = (hs.div_ceil(b.stride as u128), ws.div_ceil(b.stride as u128));
            params = params
                .saturating_add(conv_bn(1, hidden, 3))
                .saturating_add(conv_bn(hidden, c_out, 1));
            acts = acts.saturating_add(mul(4 * hidden + 3 * c_out, hs * ws));
        }
        let last = widths.out.last().copied().unwrap_or(widths.stem) as u128;
        params = params
            .saturating_add(conv_bn(last, widths.head as u128, 1))
            .saturating_add(linear(widths.head as u128, classes));
        (
            params,
            acts.saturating_add(mul(4 * widths.head as u128, hs * ws)),
        )
    }

    /// The same spec with explicit lists dropped where they say what the short form says, so
    /// an unpruned model's spec reads like the config it was built from.
    pub fn normalized(self) -> Self {
        if let ModelSpec::MobilenetV2 {
            width_mult,
            dropout,
            widths: Some(widths),
        } = &self
        {
            let nominal = ModelSpec::MobilenetV2 {
                width_mult: *width_mult,
                dropout: *dropout,
                widths: None,
            };
            return match nominal.mobilenet_widths() == *widths {
                true => nominal,
                false => self,
            };
        }
        let ModelSpec::Resnet {
            stem,
            stem_layout,
            stages,
            blocks,
            inner,
            projection,
        } = self
        else {
            return self;
        };
        let blocks = BlockCounts::of(&blocks.per_stage(stages.len()));
        let short = ModelSpec::Resnet {
            stem,
            stem_layout,
            stages: stages.clone(),
            blocks: blocks.clone(),
            inner: Vec::new(),
            projection: Vec::new(),
        }
        .resnet_blocks();
        let inner = match inner.iter().zip(&short).all(|(w, b)| *w == b.inner) {
            true => Vec::new(),
            false => inner,
        };
        // Where a block has a projection depends on widths and strides, not on `inner`.
        let projection = match projection
            .iter()
            .zip(&short)
            .all(|(p, b)| *p == b.projection)
        {
            true => Vec::new(),
            false => projection,
        };
        ModelSpec::Resnet {
            stem,
            stem_layout,
            stages,
            blocks,
            inner,
            projection,
        }
    }

    /// Names of the points whose activations a model of this spec offers to a tap (see
    /// [`crate::Model::forward_tapped`]).
    pub fn taps(&self) -> Vec<String> {
        match self {
            ModelSpec::Mlp { hidden, .. } => {
                (0..hidden.len()).map(|i| format!("layers.{i}")).collect()
            }
            ModelSpec::LeNet5 { .. } => ["conv1", "conv2", "fc1", "fc2"].map(String::from).to_vec(),
            ModelSpec::Vgg { stages, fc, .. } => (0..stages.len())
                .map(|s| format!("stages.{s}"))
                .chain((0..fc.len()).map(|i| format!("fc.{i}")))
                .collect(),
            ModelSpec::Resnet { .. } => std::iter::once("stem".to_string())
                .chain((0..self.resnet_blocks().len()).map(|b| format!("blocks.{b}")))
                .collect(),
            ModelSpec::MobilenetV2 { .. } => std::iter::once("stem".to_string())
                .chain((0..self.mobilenet_blocks().len()).map(|b| format!("blocks.{b}")))
                .chain(std::iter::once("head".to_string()))
                .collect(),
        }
    }

    /// One small model of every kind (both ResNet stems): what tests in every crate run each
    /// architecture with.
    pub fn examples() -> Vec<ModelSpec> {
        let resnet = |stem_layout, blocks| ModelSpec::Resnet {
            stem: 8,
            stem_layout,
            stages: vec![8, 16],
            blocks,
            inner: Vec::new(),
            projection: Vec::new(),
        };
        vec![
            ModelSpec::Mlp {
                hidden: vec![32, 16],
                dropout: 0.5,
                input_dropout: 0.0,
            },
            ModelSpec::LeNet5 {
                channels: lenet_channels(),
                fc: lenet_fc(),
            },
            ModelSpec::Vgg {
                stages: vec![vec![8], vec![8, 16]],
                fc: vec![32],
                dropout: 0.0,
            },
            resnet(StemLayout::Cifar, BlockCounts::Each(2)),
            resnet(StemLayout::Imagenet, BlockCounts::PerStage(vec![1, 2])),
            ModelSpec::MobilenetV2 {
                width_mult: 0.25,
                dropout: mobilenet_dropout(),
                widths: None,
            },
        ]
    }

    /// The `kind` as written in configs.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::LeNet5 { .. } => "lenet5",
            ModelSpec::Vgg { .. } => "vgg",
            ModelSpec::Resnet { .. } => "resnet",
            ModelSpec::MobilenetV2 { .. } => "mobilenet-v2",
        }
    }

    /// Checks widths and probabilities, and that the input is large enough for the
    /// architecture's convolutions and poolings.
    pub fn validate(&self, input: &InputShape) -> Result<(), SpecError> {
        match self {
            ModelSpec::Mlp {
                hidden,
                dropout,
                input_dropout,
            } => {
                check_positive("hidden", hidden)?;
                check_probability("dropout", *dropout)?;
                check_probability("input_dropout", *input_dropout)?;
            }
            ModelSpec::LeNet5 { channels, fc } => {
                check_positive("channels", channels)?;
                check_positive("fc", fc)?;
                let min = input.height.min(input.width);
                if min < 12 {
                    return Err(spec_error(
                        "kind",
                        "lenet5",
                        format!(
                            "LeNet-5 needs inputs of at least 12x12 pixels, this dataset gives \
                             {}x{} (set data.input_size, or use kind = \"mlp\")",
                            input.height, input.width
                        ),
                    ));
                }
            }
            ModelSpec::Vgg {
                stages,
                fc,
                dropout,
            } => validate_vgg(stages, fc, *dropout, input)?,
            ModelSpec::Resnet {
                stem,
                stages,
                blocks,
                inner,
                projection,
                ..
            } => self.validate_resnet(*stem, stages, blocks, (inner, projection))?,
            ModelSpec::MobilenetV2 {
                width_mult,
                dropout,
                widths,
            } => self.validate_mobilenet(*width_mult, *dropout, widths.as_ref())?,
        }
        Ok(())
    }

    /// A MobileNetV2's multiplier, dropout and widths (residual blocks keep their width).
    fn validate_mobilenet(
        &self,
        width_mult: f64,
        dropout: f64,
        widths: Option<&MobileWidths>,
    ) -> Result<(), SpecError> {
        if !(width_mult > 0.0 && width_mult <= 4.0) {
            return Err(spec_error("width_mult", width_mult, "in (0, 4]"));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(spec_error("dropout", dropout, "in [0, 1)"));
        }
        let blocks: usize = MOBILENET_V2.iter().map(|s| s.n).sum();
        if let Some(w) = widths {
            check_positive("widths.stem", &[w.stem, w.head])?;
            for (key, list) in [("widths.hidden", &w.hidden), ("widths.out", &w.out)] {
                if list.len() != blocks {
                    return Err(spec_error(
                        key,
                        list,
                        format!("one width per block ({blocks})"),
                    ));
                }
                check_positive(key, list)?;
            }
            if w.hidden[0] != w.stem {
                return Err(spec_error(
                    "widths.hidden",
                    &w.hidden,
                    "the first block has no expansion: its width is the stem's",
                ));
            }
        }
        for (b, block) in self.mobilenet_blocks().iter().enumerate() {
            if block.residual && block.c_in != block.c_out {
                return Err(spec_error(
                    "widths.out",
                    block.c_out,
                    format!(
                        "block {b} adds its input ({} channels) to its output: the widths \
                         must match",
                        block.c_in
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A ResNet's widths, and a projection wherever a block changes width or resolution.
    fn validate_resnet(
        &self,
        stem: usize,
        stages: &[usize],
        blocks: &BlockCounts,
        (inner, projection): (&[usize], &[bool]),
    ) -> Result<(), SpecError> {
        check_positive("stem", &[stem])?;
        if stages.is_empty() {
            return Err(spec_error("stages", stages, "at least one stage"));
        }
        check_positive("stages", stages)?;
        if let BlockCounts::PerStage(counts) = blocks {
            if counts.len() != stages.len() {
                return Err(spec_error(
                    "blocks",
                    counts,
                    format!(
                        "one count per stage ({}), or one number for all",
                        stages.len()
                    ),
                ));
            }
        }
        let counts = blocks.per_stage(stages.len());
        if counts.contains(&0) {
            return Err(spec_error("blocks", &counts, "at least 1 block per stage"));
        }
        if counts.iter().sum::<usize>() > 1024 {
            return Err(spec_error("blocks", &counts, "at most 1024 blocks in all"));
        }
        let n: usize = counts.iter().sum();
        if !inner.is_empty() && inner.len() != n {
            return Err(spec_error(
                "inner",
                inner,
                format!("one width per block ({n}), or leave it out"),
            ));
        }
        check_positive("inner", inner)?;
        if !projection.is_empty() && projection.len() != n {
            return Err(spec_error(
                "projection",
                projection,
                format!("one entry per block ({n}), or leave it out"),
            ));
        }
        for (b, block) in self.resnet_blocks().into_iter().enumerate() {
            if block.needs_projection() && !block.projection {
                return Err(spec_error(
                    "projection",
                    projection,
                    format!(
                        "block {b} changes width or resolution ({} -> {} channels, \
                                 stride {}) and needs a projection",
                        block.c_in, block.c_out, block.stride
                    ),
                ));
            }
        }
        Ok(())
    }
}

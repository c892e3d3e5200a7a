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
        let ModelSpec::Resnet { stages, blocks, .. } = self else {
            return Vec::new();
        };
        let pair = |from: String, to: String| [format!("^{from}\\.(.+)$"), format!("{to}.$1")];
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
            ModelSpec::Resnet {
                stem, stem_layout, ..
            } => {
                let (k, stride, _) = stem_layout.conv();
                params = conv_bn(c, *stem as u128, k as u128);
                let (mut hs, mut ws) = (h.div_ceil(stride as u128), w.div_ceil(stride as u128));
                acts = acts.saturating_add(mul(4 * *stem as u128, hs * ws));
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
                params = params.saturating_add(linear(last as u128, classes));
            }
        }
        Footprint {
            params,
            activations_per_sample: acts,
        }
    }

    /// The same spec with explicit lists dropped where they say what the short form says, so
    /// an unpruned model's spec reads like the config it was built from.
    pub fn normalized(self) -> Self {
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
        }
    }

    /// The `kind` as written in configs.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::LeNet5 { .. } => "lenet5",
            ModelSpec::Vgg { .. } => "vgg",
            ModelSpec::Resnet { .. } => "resnet",
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

//! Prunable channel groups: which tensors, along which axes, share one keep-mask.
//!
//! Removing output channel `c` of a convolution must also remove entry `c` of its BatchNorm,
//! input channel `c` of the next layer, and, across a residual add, channel `c` of every tensor
//! feeding that add. A group lists all of them, so a pruning plan is one mask per group and
//! thinning is mechanical. Paths are relative to the architecture struct (`conv1.conv.weight`).

/// What a member tensor is to the group, so a criterion knows which members to score (the
/// producing weights) and thinning knows every tensor to slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A convolution's output channels (`weight` axis 0).
    ConvOut,
    /// A convolution's input channels (`weight` axis 1) in the layer that reads the group.
    ConvIn,
    /// A linear layer's output features (`weight` axis 1; burn stores `[d_in, d_out]`).
    LinearOut,
    /// A linear layer's input features (`weight` axis 0), possibly a flattened conv output.
    LinearIn,
    /// The bias of the producing layer.
    Bias,
    BnGamma,
    BnBeta,
    /// BatchNorm running statistics: not trained, but sliced with the channels.
    BnRunningMean,
    BnRunningVar,
}

/// One tensor axis that follows a group's keep-mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Tensor path, e.g. `conv2.conv.weight` or `conv1.bn.running_mean`.
    pub param: String,
    pub role: Role,
    pub axis: usize,
    /// Consecutive entries per channel along `axis`: 1, except where a conv output is flattened
    /// into a linear layer (`h * w` entries per channel).
    pub span: usize,
}

/// A set of channels pruned together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    pub name: String,
    pub width: usize,
    pub members: Vec<GroupMember>,
}

impl ChannelGroup {
    pub(crate) fn new(name: impl Into<String>, width: usize) -> Self {
        Self {
            name: name.into(),
            width,
            members: Vec::new(),
        }
    }

    fn member(mut self, param: impl Into<String>, role: Role, axis: usize, span: usize) -> Self {
        self.members.push(GroupMember {
            param: param.into(),
            role,
            axis,
            span,
        });
        self
    }

    /// Adds the output side of a `ConvBn` at `prefix`: conv out-channels, BN parameters and
    /// BN running statistics.
    pub(crate) fn conv_bn_output(self, prefix: &str) -> Self {
        self.member(format!("{prefix}.conv.weight"), Role::ConvOut, 0, 1)
            .member(format!("{prefix}.bn.gamma"), Role::BnGamma, 0, 1)
            .member(format!("{prefix}.bn.beta"), Role::BnBeta, 0, 1)
            .member(
                format!("{prefix}.bn.running_mean"),
                Role::BnRunningMean,
                0,
                1,
            )
            .member(format!("{prefix}.bn.running_var"), Role::BnRunningVar, 0, 1)
    }

    /// Adds the output side of a `Linear` at `prefix` (its weight is `[d_in, d_out]`).
    pub(crate) fn linear_output(self, prefix: &str) -> Self {
        self.member(format!("{prefix}.weight"), Role::LinearOut, 1, 1)
            .member(format!("{prefix}.bias"), Role::Bias, 0, 1)
    }

    /// Adds a convolution at `prefix` that reads the group's channels.
    pub(crate) fn conv_input(self, prefix: &str) -> Self {
        self.member(format!("{prefix}.conv.weight"), Role::ConvIn, 1, 1)
    }

    /// Adds a linear layer at `prefix` that reads the group, `span` inputs per channel (the
    /// spatial positions of a flattened conv output, or 1).
    pub(crate) fn linear_input(self, prefix: &str, span: usize) -> Self {
        self.member(format!("{prefix}.weight"), Role::LinearIn, 0, span)
    }
}

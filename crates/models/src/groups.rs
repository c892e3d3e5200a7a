//! Prunable channel groups: which tensors, along which axes, share one keep-mask.
//!
//! Removing output channel `c` of a convolution must also remove entry `c` of its BatchNorm,
//! input channel `c` of the next layer, and, across a residual add, channel `c` of every tensor
//! feeding that add. A group lists all of them, so a pruning plan is one mask per group and
//! thinning is mechanical. Paths are relative to the architecture struct (`conv1.conv.weight`).

/// One tensor axis that follows a group's keep-mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Parameter path, e.g. `conv2.conv.weight`.
    pub param: String,
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

    pub(crate) fn member(mut self, param: impl Into<String>, axis: usize, span: usize) -> Self {
        self.members.push(GroupMember {
            param: param.into(),
            axis,
            span,
        });
        self
    }

    /// Adds the output side of a `ConvBn` at `prefix`: conv out-channels and BN parameters.
    pub(crate) fn conv_bn_output(self, prefix: &str) -> Self {
        self.member(format!("{prefix}.conv.weight"), 0, 1)
            .member(format!("{prefix}.bn.gamma"), 0, 1)
            .member(format!("{prefix}.bn.beta"), 0, 1)
    }

    /// Adds the output side of a `Linear` at `prefix` (its weight is `[d_in, d_out]`).
    pub(crate) fn linear_output(self, prefix: &str) -> Self {
        self.member(format!("{prefix}.weight"), 1, 1)
            .member(format!("{prefix}.bias"), 0, 1)
    }
}

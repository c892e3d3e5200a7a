//! The registry of techniques: the one place that lists them. A new technique adds its
//! section here (for validation and parents) and its builder (for training); the loop, the
//! stage runner, parent resolution and run identity stay as they are.

use technique::{StageContext, Technique, TechniqueConfig, TechniqueError};

use crate::schema::StageConfig;

/// The technique sections a config holds.
pub fn sections(config: &StageConfig) -> Vec<&dyn TechniqueConfig> {
    let mut out: Vec<&dyn TechniqueConfig> = Vec::new();
    if let Some(distill) = &config.distill {
        out.push(distill);
    }
    if let Some(prune) = &config.prune {
        out.push(prune);
    }
    if let Some(sparsify) = &config.sparsify {
        out.push(sparsify);
    }
    if let Some(quant) = &config.quant {
        out.push(quant);
    }
    out
}

/// Checks between sections: combinations that cannot work.
pub fn check_combination(config: &StageConfig) -> Result<(), technique::Invalid> {
    let hint = config.distill.as_ref().and_then(|d| d.hint.as_ref());
    if let (Some(hint), Some(_)) = (hint, &config.prune) {
        return Err(technique::Invalid::new(
            "distill.hint.student_layer",
            format!("{:?}", hint.student_layer),
            "a hint cannot be combined with [prune]: pruning changes the widths the hint's \
             adapter maps (distill without a hint works)",
        ));
    }
    if let (Some(_), Some(sparsify)) = (&config.prune, &config.sparsify) {
        return Err(technique::Invalid::new(
            "sparsify.sparsity",
            sparsify.sparsity,
            "[sparsify] cannot share a stage with [prune] (thinning reshapes the weights its \
             masks cover): prune first, then sparsify in a stage `from` the pruned one",
        ));
    }
    if let (Some(_), Some(quant)) = (&config.prune, &config.quant) {
        return Err(technique::Invalid::new(
            "quant.mode",
            quant.mode.name(),
            "[quant] cannot share a stage with [prune] (thinning reshapes the layers it \
             quantizes): prune first, then quantize in a stage `from` the pruned one",
        ));
    }
    if let (Some(_), Some(quant)) = (&config.sparsify, &config.quant) {
        return Err(technique::Invalid::new(
            "quant.mode",
            quant.mode.name(),
            "[quant] cannot share a stage with [sparsify] (the integer file is dense): \
             quantize in a stage `from` the sparse one",
        ));
    }
    Ok(())
}

/// The techniques a stage trains with, built once its parents are ready.
pub fn build<'a>(
    config: &StageConfig,
    ctx: &StageContext<'a>,
    hooks: &crate::testing::TestHooks,
) -> Result<Vec<Box<dyn Technique + 'a>>, TechniqueError> {
    let mut out: Vec<Box<dyn Technique + 'a>> = Vec::new();
    if let Some(distill) = &config.distill {
        out.push(Box::new(distill::Distillation::new(distill, ctx)?));
    }
    if let Some(prune) = &config.prune {
        out.push(Box::new(prune::Pruning::new(prune, ctx)?));
    }
    if let Some(sparsify) = &config.sparsify {
        out.push(Box::new(prune::Sparsification::new(sparsify, ctx)?));
    }
    if let Some(quant) = &config.quant {
        out.push(Box::new(quant::Quantization::new(quant, ctx)?));
    }
    if let Some(after) = hooks.narrow_after_epoch {
        out.push(Box::new(crate::testing::NarrowAfterEpoch::new(after)));
    }
    Ok(out)
}

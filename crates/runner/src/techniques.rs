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
    out
}

/// The techniques a stage trains with, built once its parents are ready.
pub fn build<'a>(
    config: &StageConfig,
    ctx: &StageContext<'a>,
) -> Result<Vec<Box<dyn Technique + 'a>>, TechniqueError> {
    let mut out: Vec<Box<dyn Technique + 'a>> = Vec::new();
    if let Some(distill) = &config.distill {
        out.push(Box::new(distill::Distillation::new(distill, ctx)?));
    }
    if let Some(narrow) = crate::testing::NarrowAfterEpoch::from_env() {
        out.push(Box::new(narrow));
    }
    Ok(out)
}

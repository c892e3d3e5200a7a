//! The registry of techniques: the one place that lists them. A new technique adds its
//! section here (for validation and parents) and its builder (for training); the loop, the
//! stage runner, parent resolution and run identity stay as they are.

use std::path::Path;

use technique::{
    Analysis, ArtifactFormat, StageContext, Technique, TechniqueConfig, TechniqueError,
};

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

/// The artefact formats the techniques write (beside the float `model.bpk`).
pub fn artifact_formats() -> Vec<ArtifactFormat> {
    quant::ARTIFACT_FORMATS.to_vec()
}

/// The commands the techniques bring (`train sensitivity`).
pub fn analyses() -> Vec<Analysis> {
    vec![prune::sensitivity::ANALYSIS]
}

/// The artefact format of `path`, when it is one.
pub fn artifact_format(path: &Path) -> Option<ArtifactFormat> {
    artifact_formats().into_iter().find(|f| f.matches(path))
}

/// The files outside a technique's own crate that may name one: this registry and the schema
/// (one field per section).
pub const MAY_NAME_TECHNIQUES: [&str; 2] = ["settings/src/techniques.rs", "settings/src/schema.rs"];

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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Rust file under `dir`.
    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn only_the_registry_and_the_schema_name_a_technique_crate() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for krate in ["settings", "runner", "tools", "measure", "train", "sweep"] {
            rust_files(&crates.join(krate).join("src"), &mut files);
        }
        let mut offenders = Vec::new();
        for file in files {
            let name = file.strip_prefix(&crates).unwrap().display().to_string();
            if MAY_NAME_TECHNIQUES.contains(&name.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for krate in ["distill::", "prune::", "quant::"] {
                    let named = code.match_indices(krate).any(|(at, _)| {
                        // A path's first segment, not the end of another (`self::quant::`).
                        at == 0
                            || !code[..at]
                                .ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                    });
                    if named {
                        offenders.push(format!("{name}:{}: {}", i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "these files name a technique crate; go through settings::techniques (the registry) \
             or the technique API instead:\n{}",
            offenders.join("\n")
        );
    }
}

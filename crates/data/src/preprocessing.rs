//! What a model expects of its input, recorded with it: every model file, summary and export
//! carries one, so whoever loads the model (a child stage, a teacher, `train bench`) feeds it
//! the inputs it was trained on, whatever the loader's own data settings are.

use serde::{Deserialize, Serialize};

use crate::batch::{Preprocess, MAX_CHANNELS};

/// How images become a model's input: channels, size, the resize rule, per-channel
/// normalisation, and what the outputs mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// 1 (grayscale) or 3 (RGB, in that order).
    pub channels: usize,
    /// The input's height and width in pixels.
    pub height: usize,
    pub width: usize,
    /// How an image of another size is brought to `height x width`: see [`RESIZE_RULE`].
    pub resize: String,
    /// Per channel, on the 0..1 pixel scale: the model reads `(pixel / 255 - mean) / std`.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// One name per output, in order.
    pub class_names: Vec<String>,
}

/// The one resize rule: bilinear with aligned pixel centres (antialiased by a triangle filter
/// when a folder's images are shrunk as they are decoded).
pub const RESIZE_RULE: &str = "bilinear";

/// The most classes a model may output (labels are stored as `u16`).
pub const MAX_CLASSES: usize = 1 << 16;

/// The longest side of a model input in pixels.
pub const MAX_SIDE: usize = 4096;

impl Preprocessing {
    /// What `prep` does, with the class names.
    pub fn of(prep: &Preprocess, class_names: &[String]) -> Self {
        Self {
            channels: prep.channels,
            height: prep.out_rows,
            width: prep.out_cols,
            resize: RESIZE_RULE.to_string(),
            mean: prep.mean[..prep.channels].to_vec(),
            std: prep.std[..prep.channels].to_vec(),
            class_names: class_names.to_vec(),
        }
    }

    /// The first reason this record cannot describe a model's input (it came from a file).
    pub fn check(&self) -> Result<(), String> {
        if !(self.channels == 1 || self.channels == MAX_CHANNELS) {
            return Err(format!("channels = {}: 1 or 3", self.channels));
        }
        for (name, side) in [("height", self.height), ("width", self.width)] {
            if !(1..=MAX_SIDE).contains(&side) {
                return Err(format!("{name} = {side}: 1 to {MAX_SIDE}"));
            }
        }
        if self.resize != RESIZE_RULE {
            return Err(format!("resize = {:?}: {RESIZE_RULE:?}", self.resize));
        }
        for (name, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.len() != self.channels {
                return Err(format!(
                    "{name} has {} values for {} channels",
                    values.len(),
                    self.channels
                ));
            }
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("mean {m}: a finite number"));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("std {s}: a finite number above 0"));
        }
        if self.class_names.is_empty() || self.class_names.len() > MAX_CLASSES {
            return Err(format!(
                "{} class names: 1 to {MAX_CLASSES}",
                self.class_names.len()
            ));
        }
        Ok(())
    }

    /// The preprocessing of stored `src_rows x src_cols` images for this model.
    pub fn preprocess(&self, src_rows: usize, src_cols: usize) -> Preprocess {
        let mut mean = [0.0; MAX_CHANNELS];
        let mut std = [1.0; MAX_CHANNELS];
        mean[..self.channels].copy_from_slice(&self.mean);
        std[..self.channels].copy_from_slice(&self.std);
        Preprocess {
            channels: self.channels,
            mean,
            std,
            src_rows,
            src_cols,
            out_rows: self.height,
            out_cols: self.width,
        }
    }

    /// One line for logs: `3x32x32, mean [0.4914, 0.4822, 0.4465], std [...]`.
    pub fn describe(&self) -> String {
        let list = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{}x{}x{}, mean [{}], std [{}]",
            self.channels,
            self.height,
            self.width,
            list(&self.mean),
            list(&self.std)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Preprocessing {
        Preprocessing {
            channels: 3,
            height: 32,
            width: 32,
            resize: RESIZE_RULE.into(),
            mean: vec![0.5, 0.4, 0.3],
            std: vec![0.2, 0.2, 0.25],
            class_names: vec!["cat".into(), "dog".into()],
        }
    }

    #[test]
    fn a_record_round_trips_through_preprocess() {
        let r = record();
        r.check().unwrap();
        let prep = r.preprocess(40, 40);
        assert_eq!((prep.out_rows, prep.image_len()), (32, 3 * 32 * 32));
        assert_eq!(Preprocessing::of(&prep, &r.class_names), r);
    }

    #[test]
    fn bad_records_are_refused() {
        let bad = [
            Preprocessing {
                channels: 2,
                ..record()
            },
            Preprocessing {
                std: vec![0.2, 0.0, 0.1],
                ..record()
            },
            Preprocessing {
                mean: vec![0.5],
                ..record()
            },
            Preprocessing {
                height: 0,
                ..record()
            },
            Preprocessing {
                class_names: vec![],
                ..record()
            },
        ];
        for r in bad {
            assert!(r.check().is_err(), "{r:?}");
        }
    }
}

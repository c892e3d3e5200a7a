//! Learning-rate schedules, evaluated per optimiser step.

use settings::schema::ScheduleConfig;

/// The learning rate at `step` (0-based) of a run of `epochs * steps_per_epoch` steps.
///
/// Warm-up rises linearly from `base / warmup_steps` to `base`; the schedule proper then
/// runs over the remaining steps.
pub fn learning_rate(
    schedule: &ScheduleConfig,
    base: f64,
    step: usize,
    steps_per_epoch: usize,
    epochs: usize,
) -> f64 {
    let warmup_epochs = match schedule {
        ScheduleConfig::Constant { warmup_epochs }
        | ScheduleConfig::Step { warmup_epochs, .. }
        | ScheduleConfig::Cosine { warmup_epochs, .. } => *warmup_epochs,
    };
    let warmup_steps = (warmup_epochs * steps_per_epoch as f64).round() as usize;
    if step < warmup_steps {
        return base * (step + 1) as f64 / warmup_steps as f64;
    }
    match schedule {
        ScheduleConfig::Constant { .. } => base,
        ScheduleConfig::Step {
            step_epochs, gamma, ..
        } => {
            let epoch = step / steps_per_epoch.max(1);
            base * gamma.powi((epoch / step_epochs) as i32)
        }
        ScheduleConfig::Cosine { min_lr, .. } => {
            let total = (epochs * steps_per_epoch)
                .saturating_sub(warmup_steps)
                .max(1);
            let t = (step - warmup_steps) as f64 / total as f64;
            min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_then_cosine_reaches_min_lr() {
        let s = ScheduleConfig::Cosine {
            min_lr: 0.0,
            warmup_epochs: 1.0,
        };
        assert!(close(learning_rate(&s, 0.1, 0, 10, 5), 0.01));
        assert!(close(learning_rate(&s, 0.1, 9, 10, 5), 0.1));
        assert!(close(learning_rate(&s, 0.1, 10, 10, 5), 0.1));
        assert!(learning_rate(&s, 0.1, 49, 10, 5) < 0.001);
    }

    #[test]
    fn step_decays_every_step_epochs() {
        let s = ScheduleConfig::Step {
            step_epochs: 2,
            gamma: 0.5,
            warmup_epochs: 0.0,
        };
        assert!(close(learning_rate(&s, 1.0, 19, 10, 6), 1.0));
        assert!(close(learning_rate(&s, 1.0, 20, 10, 6), 0.5));
        assert!(close(learning_rate(&s, 1.0, 45, 10, 6), 0.25));
    }
}

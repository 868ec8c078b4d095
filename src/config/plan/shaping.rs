//! A route's and a sink's `transform` and `rate`, checked.

use super::{Builder, RatePlan};
use crate::config::model::{RateModel, TransformModel};
use crate::config::yaml::child;
use crate::transform::Transform;

impl Builder<'_> {
    /// The transform at `path`: `Ok(None)` when there is none, `Err` after recording each
    /// error with its field's path.
    pub(super) fn transform(
        &mut self,
        path: &str,
        model: Option<&TransformModel>,
    ) -> Result<Option<Transform>, ()> {
        let Some(model) = model else { return Ok(None) };
        match Transform::compile(model) {
            Ok(transform) => Ok(Some(transform)),
            Err(errors) => {
                for (field, message) in errors {
                    self.error(&child(path, &field), message);
                }
                Err(())
            }
        }
    }

    pub(super) fn rate(
        &mut self,
        path: &str,
        model: Option<&RateModel>,
    ) -> Result<Option<RatePlan>, ()> {
        let Some(model) = model else { return Ok(None) };
        let mut ok = true;
        if model.messages == 0 {
            self.error(&child(path, "messages"), "messages must be at least 1");
            ok = false;
        }
        if model.per.is_zero() {
            self.error(&child(path, "per"), "per must be longer than 0s");
            ok = false;
        }
        if model.burst == Some(0) {
            self.error(&child(path, "burst"), "burst must be at least 1");
            ok = false;
        }
        if !ok {
            return Err(());
        }
        Ok(Some(RatePlan {
            messages: model.messages,
            per: model.per,
            burst: model.burst.unwrap_or(model.messages),
        }))
    }
}

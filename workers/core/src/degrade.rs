//! The degradation matrix (`docs/architecture.md`): given which modalities of an event are
//! usable and which tasks it asked for, decide what runs, what is skipped and why, what is
//! flagged as degraded, or that the event goes to the dead-letter stream.
//!
//! | event has | image usable | outputs |
//! |---|---|---|
//! | image + text | yes | everything requested |
//! | image only | yes | image embedding, fused, caption, image tags (answer with a question) |
//! | text only | — | text embedding, fused, text tags; caption/answer `skipped: image_absent` |
//! | image + text | no | as text only, flagged `degraded: [{modality: image, reason}]` |
//! | nothing usable | — | dead letter with a reason code |
//!
//! Policy may turn an image failure into a dead letter instead (per tenant).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reason::ReasonCode;
use crate::task::{Skipped, TaskSet};

/// An input modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// The image.
    Image,
    /// The text.
    Text,
    /// The question.
    Question,
}

/// A modality that was present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degradation {
    /// Which one.
    pub modality: Modality,
    /// Reason code (`image_not_found`, `image_corrupt`, `text_too_long`, …).
    pub reason: ReasonCode,
}

/// Whether a modality can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Not in the event.
    Absent,
    /// Usable.
    Usable,
    /// In the event but unusable, with the reason code.
    Unusable(ReasonCode),
}

impl Availability {
    fn usable(&self) -> bool {
        matches!(self, Availability::Usable)
    }
}

/// What to do when an event's image is unusable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnImageFailure {
    /// Produce what the other modalities allow, flagged as degraded.
    #[default]
    Degrade,
    /// Send the event to the dead-letter stream.
    DeadLetter,
}

/// Degradation policy: a default and per-tenant overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// For events without an override.
    pub on_image_failure: OnImageFailure,
    /// Per tenant.
    pub tenants: BTreeMap<String, OnImageFailure>,
}

impl Policy {
    /// The rule for `tenant`.
    pub fn for_tenant(&self, tenant: Option<&str>) -> OnImageFailure {
        tenant
            .and_then(|t| self.tenants.get(t))
            .copied()
            .unwrap_or(self.on_image_failure)
    }
}

/// What runs for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Use the image.
    pub image: bool,
    /// Use the text.
    pub text: bool,
    /// Use the question.
    pub question: bool,
    /// Tasks to run (requested and servable).
    pub tasks: TaskSet,
    /// Requested tasks that cannot run, with reasons.
    pub skipped: Vec<Skipped>,
    /// Unusable modalities (and, added by the pipeline once tokenised, a text or question
    /// cut to the model's positions: `text_truncated`, `question_truncated`).
    pub degraded: Vec<Degradation>,
}

/// The decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the plan.
    Process(Plan),
    /// Dead-letter the event.
    DeadLetter {
        /// Reason code.
        reason: ReasonCode,
        /// Detail for people.
        detail: String,
    },
}

/// Decide for one event.
pub fn plan_event(
    requested: TaskSet,
    image: &Availability,
    text: &Availability,
    question: &Availability,
    on_image_failure: OnImageFailure,
) -> Decision {
    let mut degraded = Vec::new();
    for (m, a) in [
        (Modality::Image, image),
        (Modality::Text, text),
        (Modality::Question, question),
    ] {
        if let Availability::Unusable(r) = a {
            degraded.push(Degradation {
                modality: m,
                reason: *r,
            });
        }
    }
    if let (Availability::Unusable(r), OnImageFailure::DeadLetter) = (image, on_image_failure) {
        return Decision::DeadLetter {
            reason: *r,
            detail: "image unusable and the policy dead-letters image failures".into(),
        };
    }
    let (i, t, q) = (image.usable(), text.usable(), question.usable());
    let mut tasks = TaskSet::default();
    let mut skipped = Vec::new();
    for task in requested.iter() {
        match task.missing_input(i, t, q) {
            None => tasks.insert(task),
            Some(reason) => skipped.push(Skipped { task, reason }),
        }
    }
    if tasks.is_empty() {
        let (reason, detail) = match degraded.first() {
            Some(d) => (
                d.reason,
                format!(
                    "{:?} unusable and nothing else serves a requested task",
                    d.modality
                ),
            ),
            None if !i && !t && !q => (
                ReasonCode::NoUsableInput,
                "the event has no image, text or question".to_owned(),
            ),
            None => (
                ReasonCode::NoServableTask,
                format!(
                    "no requested task ({}) can run on the modalities given",
                    requested
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        };
        return Decision::DeadLetter { reason, detail };
    }
    Decision::Process(Plan {
        image: i,
        text: t,
        question: q,
        tasks,
        skipped,
        degraded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{SkipReason, Task};
    use proptest::prelude::*;
    use Availability::*;

    /// The bundle's tasks (the rows below are about them; `moderate` follows embed's
    /// rule, tested in `task.rs`).
    fn all() -> TaskSet {
        TaskSet::unnamed()
    }
    fn bad(r: ReasonCode) -> Availability {
        Unusable(r)
    }
    fn plan(d: Decision) -> Plan {
        match d {
            Decision::Process(p) => p,
            Decision::DeadLetter { reason, .. } => panic!("dead-lettered: {reason}"),
        }
    }
    fn dlq(d: Decision) -> ReasonCode {
        match d {
            Decision::DeadLetter { reason, .. } => reason,
            Decision::Process(p) => panic!("processed: {p:?}"),
        }
    }
    fn skipped(p: &Plan) -> Vec<(Task, SkipReason)> {
        p.skipped.iter().map(|s| (s.task, s.reason)).collect()
    }

    #[test]
    fn row_image_and_text() {
        let p = plan(plan_event(
            all(),
            &Usable,
            &Usable,
            &Usable,
            OnImageFailure::Degrade,
        ));
        assert_eq!(p.tasks, all());
        assert!(p.skipped.is_empty() && p.degraded.is_empty());
    }

    #[test]
    fn row_image_only() {
        let p = plan(plan_event(
            all(),
            &Usable,
            &Absent,
            &Absent,
            OnImageFailure::Degrade,
        ));
        assert_eq!(
            p.tasks,
            TaskSet::parse_list("embed,caption,tag").expect("ok")
        );
        assert_eq!(
            skipped(&p),
            vec![
                (Task::Match, SkipReason::TextAbsent),
                (Task::Answer, SkipReason::QuestionAbsent)
            ]
        );
    }

    #[test]
    fn row_text_only() {
        let p = plan(plan_event(
            all(),
            &Absent,
            &Usable,
            &Absent,
            OnImageFailure::Degrade,
        ));
        assert_eq!(p.tasks, TaskSet::parse_list("embed,tag").expect("ok"));
        assert_eq!(
            skipped(&p),
            vec![
                (Task::Match, SkipReason::ImageAbsent),
                (Task::Caption, SkipReason::ImageAbsent),
                (Task::Answer, SkipReason::ImageAbsent)
            ]
        );
        assert!(p.degraded.is_empty());
    }

    #[test]
    fn row_image_unusable_degrades_to_text_only() {
        let p = plan(plan_event(
            all(),
            &bad(ReasonCode::ImageNotFound),
            &Usable,
            &Usable,
            OnImageFailure::Degrade,
        ));
        assert_eq!(p.tasks, TaskSet::parse_list("embed,tag").expect("ok"));
        assert!(!p.image);
        assert_eq!(
            p.degraded,
            vec![Degradation {
                modality: Modality::Image,
                reason: ReasonCode::ImageNotFound
            }]
        );
        let r = dlq(plan_event(
            all(),
            &bad(ReasonCode::ImageCorrupt),
            &Usable,
            &Absent,
            OnImageFailure::DeadLetter,
        ));
        assert_eq!(r, "image_corrupt");
    }

    #[test]
    fn row_nothing_usable() {
        assert_eq!(
            dlq(plan_event(
                all(),
                &Absent,
                &Absent,
                &Absent,
                OnImageFailure::Degrade
            )),
            "no_usable_input"
        );
        assert_eq!(
            dlq(plan_event(
                all(),
                &bad(ReasonCode::ImageCorrupt),
                &Absent,
                &Usable,
                OnImageFailure::Degrade
            )),
            "image_corrupt"
        );
        assert_eq!(
            dlq(plan_event(
                all(),
                &Absent,
                &Absent,
                &Usable,
                OnImageFailure::Degrade
            )),
            "no_servable_task"
        );
        let caption_only = TaskSet::parse_list("caption").expect("ok");
        assert_eq!(
            dlq(plan_event(
                caption_only,
                &Absent,
                &Usable,
                &Absent,
                OnImageFailure::Degrade
            )),
            "no_servable_task"
        );
    }

    #[test]
    fn tenant_overrides() {
        let mut p = Policy::default();
        p.tenants
            .insert("strict".into(), OnImageFailure::DeadLetter);
        assert_eq!(p.for_tenant(Some("strict")), OnImageFailure::DeadLetter);
        assert_eq!(p.for_tenant(Some("other")), OnImageFailure::Degrade);
        assert_eq!(p.for_tenant(None), OnImageFailure::Degrade);
    }

    fn avail() -> impl Strategy<Value = Availability> {
        prop_oneof![
            Just(Absent),
            Just(Usable),
            Just(bad(ReasonCode::ImageCorrupt))
        ]
    }

    proptest! {
        /// Every requested task is either planned or skipped (never both, never lost);
        /// a planned task has its inputs; every unusable modality is flagged; a dead
        /// letter happens exactly when nothing requested can run (or policy says so).
        #[test]
        fn decisions_account_for_every_task(
            bits in 1u8..128, img in avail(), txt in avail(), q in avail(), strict in any::<bool>()
        ) {
            let req: TaskSet = Task::ALL.into_iter().filter(|t| bits & (1 << *t as u8) != 0).collect();
            let pol = if strict { OnImageFailure::DeadLetter } else { OnImageFailure::Degrade };
            let d = plan_event(req, &img, &txt, &q, pol);
            let servable: TaskSet = req.iter()
                .filter(|t| t.missing_input(img.usable(), txt.usable(), q.usable()).is_none())
                .collect();
            match d {
                Decision::Process(p) => {
                    prop_assert!(!(strict && matches!(img, Unusable(_))));
                    prop_assert_eq!(p.tasks, servable);
                    prop_assert!(!p.tasks.is_empty());
                    prop_assert_eq!(p.tasks.len() + p.skipped.len(), req.len());
                    for s in &p.skipped {
                        prop_assert!(req.contains(s.task) && !p.tasks.contains(s.task));
                    }
                    let unusable = [&img, &txt, &q].iter().filter(|a| matches!(a, Unusable(_))).count();
                    prop_assert_eq!(p.degraded.len(), unusable);
                }
                Decision::DeadLetter { .. } => {
                    prop_assert!(servable.is_empty() || (strict && matches!(img, Unusable(_))));
                }
            }
        }
    }
}

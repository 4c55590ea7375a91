//! Tasks an event can ask for, and why a requested task produced nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A task an event can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Image, text and fused embeddings.
    Embed,
    /// Image–text match score.
    Match,
    /// Caption of the image.
    Caption,
    /// Answer to the question about the image.
    Answer,
    /// Zero-shot tags.
    Tag,
    /// Moderation signals and the policy's decision.
    Moderate,
    /// The image's PDQ perceptual hash (no model: computed while preprocessing).
    Hash,
}

impl Task {
    /// Every task, in output order.
    pub const ALL: [Task; 7] = [
        Task::Embed,
        Task::Match,
        Task::Caption,
        Task::Answer,
        Task::Tag,
        Task::Moderate,
        Task::Hash,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Match => "match",
            Task::Caption => "caption",
            Task::Answer => "answer",
            Task::Tag => "tag",
            Task::Moderate => "moderate",
            Task::Hash => "hash",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!("unknown task {s:?} (expected one of embed, match, caption, answer, tag, moderate, hash)")
            })
    }
}

/// A set of tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TaskSet(u8);

impl TaskSet {
    /// Every task.
    pub fn all() -> Self {
        Task::ALL.into_iter().collect()
    }
    /// What an event that names no tasks asks for: every task of the bundle (not
    /// `moderate`, which the worker's `[moderation]` adds when it serves it, nor `hash`,
    /// asked for by name).
    pub fn unnamed() -> Self {
        Task::ALL
            .into_iter()
            .filter(|t| !matches!(t, Task::Moderate | Task::Hash))
            .collect()
    }
    /// Whether `t` is in the set.
    pub fn contains(self, t: Task) -> bool {
        self.0 & (1 << t as u8) != 0
    }
    /// Add `t`.
    pub fn insert(&mut self, t: Task) {
        self.0 |= 1 << t as u8;
    }
    /// Whether empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The tasks, in `Task::ALL` order.
    pub fn iter(self) -> impl Iterator<Item = Task> {
        Task::ALL.into_iter().filter(move |t| self.contains(*t))
    }
    /// Parse `embed,caption,...`.
    pub fn parse_list(s: &str) -> std::result::Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Task::from_str)
            .collect()
    }
}

impl FromIterator<Task> for TaskSet {
    fn from_iter<I: IntoIterator<Item = Task>>(iter: I) -> Self {
        let mut s = TaskSet::default();
        for t in iter {
            s.insert(t);
        }
        s
    }
}

/// Why a requested task produced no output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The task needs an image and the item has none (or it was unusable).
    ImageAbsent,
    /// The task needs text and the item has none.
    TextAbsent,
    /// The task needs a question and the item has none.
    QuestionAbsent,
    /// The bundle has no model for this task.
    ModelAbsent,
}

impl SkipReason {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::ImageAbsent => "image_absent",
            SkipReason::TextAbsent => "text_absent",
            SkipReason::QuestionAbsent => "question_absent",
            SkipReason::ModelAbsent => "model_absent",
        }
    }
}

/// A skipped task and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Skipped {
    /// The task.
    pub task: Task,
    /// The reason.
    pub reason: SkipReason,
}

impl Task {
    /// Why this task cannot run on an item with these modalities, or `None` when it can:
    /// embed, tag and moderate need an image or text, match needs both, caption needs an
    /// image, answer needs an image and a question, hash needs an image.
    pub fn missing_input(self, image: bool, text: bool, question: bool) -> Option<SkipReason> {
        match self {
            Task::Embed | Task::Tag | Task::Moderate if !image && !text => {
                Some(SkipReason::ImageAbsent)
            }
            Task::Match | Task::Caption | Task::Answer | Task::Hash if !image => {
                Some(SkipReason::ImageAbsent)
            }
            Task::Match if !text => Some(SkipReason::TextAbsent),
            Task::Answer if !question => Some(SkipReason::QuestionAbsent),
            _ => None,
        }
    }

    /// The batching lane of the task: encoder passes are fast, generation is slow, and a
    /// slow caption batch must not hold embeddings back.
    pub fn lane(self) -> Lane {
        match self {
            Task::Embed | Task::Match | Task::Tag | Task::Moderate | Task::Hash => Lane::Encode,
            Task::Caption | Task::Answer => Lane::Generate,
        }
    }
}

/// A batching lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Embeddings, match scores, tags: one encoder pass per item.
    Encode,
    /// Captions and answers: autoregressive decoding.
    Generate,
}

impl Lane {
    /// Both lanes.
    pub const ALL: [Lane; 2] = [Lane::Encode, Lane::Generate];

    /// Index for per-lane arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Encode => "encode",
            Lane::Generate => "generate",
        }
    }
}

impl TaskSet {
    /// The tasks of this set that run in `lane`.
    pub fn in_lane(self, lane: Lane) -> TaskSet {
        self.iter().filter(|t| t.lane() == lane).collect()
    }

    /// Number of tasks.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

impl Serialize for TaskSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for TaskSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Task>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_input_follows_the_degradation_matrix() {
        use SkipReason::*;
        let m = |t: Task, i, x, q| t.missing_input(i, x, q);
        assert_eq!(m(Task::Embed, false, true, false), None);
        assert_eq!(m(Task::Embed, false, false, true), Some(ImageAbsent));
        assert_eq!(m(Task::Match, true, false, false), Some(TextAbsent));
        assert_eq!(m(Task::Match, false, true, false), Some(ImageAbsent));
        assert_eq!(m(Task::Caption, false, true, true), Some(ImageAbsent));
        assert_eq!(m(Task::Answer, true, true, false), Some(QuestionAbsent));
        assert_eq!(m(Task::Answer, true, false, true), None);
        assert_eq!(m(Task::Tag, true, false, false), None);
        assert_eq!(m(Task::Moderate, false, true, false), None);
        assert_eq!(m(Task::Moderate, true, false, false), None);
        assert_eq!(m(Task::Moderate, false, false, true), Some(ImageAbsent));
    }

    #[test]
    fn task_sets_serialise_as_lists_and_split_by_lane() {
        let s = TaskSet::parse_list("tag,caption,embed").expect("valid");
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            r#"["embed","caption","tag"]"#
        );
        let back: TaskSet = serde_json::from_str(r#"["caption","embed","tag"]"#).expect("json");
        assert_eq!(back, s);
        assert_eq!(
            s.in_lane(Lane::Generate),
            TaskSet::parse_list("caption").expect("ok")
        );
        assert_eq!(s.in_lane(Lane::Encode).len(), 2);
    }
}

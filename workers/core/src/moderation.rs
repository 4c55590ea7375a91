//! Content moderation as pure logic: the signals the models measured for one event, the
//! policy (thresholds per signal and category, actions, per-tenant overrides) and the
//! decision with the rules that fired.
//!
//! Long because signals (list matches included),
//! policy, overrides, term matching and the decision are one rule set, tested together (unit
//! and property tests).
//!
//! Rules (also in `docs/moderation.md`):
//! - every rule compares one score with one threshold: `nsfw ≥ t`, `similarity(category) ≥
//!   t` (the best cosine between a text of the event — its `text`, or the text read in its
//!   image — and the category's policy phrases), or a category's exact term found in a text
//!   (score 1);
//! - a rule that reaches its threshold *fires* with its action (`review` or `block`); the
//!   decision is the most severe action fired, `allow` when none fires;
//! - the decision is monotone: raising any score never lowers the action (property-tested);
//! - a signal that could not be measured (no image: no NSFW score) fires nothing and is listed
//!   as missing, so a consumer can tell "clean" from "not looked at".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the policy does with an event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do.
    #[default]
    Allow,
    /// A person should look at it.
    Review,
    /// Take it down.
    Block,
}

impl Action {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Block => "block",
        }
    }
}

/// Which text of the event a text signal read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// The event's `text`.
    EventText,
    /// The text read in the image (OCR).
    ImageText,
}

impl TextSource {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            TextSource::EventText => "event_text",
            TextSource::ImageText => "image_text",
        }
    }
}

/// The best match of one text against one category's policy phrases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Similarity {
    /// The text compared.
    pub source: TextSource,
    /// The category.
    pub category: String,
    /// Cosine similarity of the sentence embeddings, in [-1, 1].
    pub score: f32,
    /// The phrase that matched best.
    pub phrase: String,
}

/// An exact term of a category found in a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermHit {
    /// The text it was found in.
    pub source: TextSource,
    /// The category.
    pub category: String,
    /// The term as the policy lists it.
    pub term: String,
}

/// A line of text read in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextLine {
    /// The text.
    pub text: String,
    /// Mean probability of its characters.
    pub score: f32,
    /// Its four corners (top-left, top-right, bottom-right, bottom-left), pixels.
    #[serde(rename = "box")]
    pub bbox: [[f32; 2]; 4],
}

/// A signal that was asked for but could not be measured, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// `nsfw`, `image_text`, `text_similarity`.
    pub signal: String,
    /// Reason code (`image_absent`, `text_absent`, …).
    pub reason: String,
}

/// What the models measured for one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Probability that the image is not safe for work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsfw: Option<f32>,
    /// Text read in the image: its lines in reading order, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_text: Option<String>,
    /// The lines read in the image, with their boxes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_text_lines: Vec<TextLine>,
    /// Best phrase similarity per (text, category).
    #[serde(default)]
    pub similarity: Vec<Similarity>,
    /// Exact terms found.
    #[serde(default)]
    pub terms: Vec<TermHit>,
    /// Entries of known-hash lists the image matched (docs/matching.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<ListMatch>,
    /// Entries of known-embedding lists the image matched (docs/matching.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embedding_matches: Vec<EmbeddingMatch>,
    /// The image classifier pack's labels of the image, when a category names labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_labels: Vec<ImageLabel>,
    /// Signals that could not be measured.
    #[serde(default)]
    pub missing: Vec<Missing>,
}

/// A label an image classifier pack gave the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageLabel {
    /// The class name.
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// The pack.
    pub source: String,
}

/// A match of the image against an entry of a known-hash list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMatch {
    /// The list's id.
    pub list: String,
    /// The entry's item id.
    pub item: String,
    /// The entry's label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Hamming distance from the nearest of the image's 8 dihedral PDQ hashes.
    pub distance: u32,
    /// The most distance the list matches at.
    pub max_distance: u32,
    /// What a match of this list asks for.
    pub action: Action,
}

/// A match of the image's embedding against an entry of a known-embedding list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingMatch {
    /// The list's id.
    pub list: String,
    /// The entry's item id.
    pub item: String,
    /// The entry's label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Cosine similarity of the image's embedding and the entry's.
    pub similarity: f32,
    /// The least similarity the list matches at.
    pub min_similarity: f32,
    /// What a match of this list asks for.
    pub action: Action,
}

/// Thresholds of one score: the lowest score that asks for review, and for a block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Review at or above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<f32>,
    /// Block at or above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<f32>,
}

impl Thresholds {
    /// The most severe action `score` reaches, with the threshold it reached.
    pub fn action(&self, score: f32) -> Option<(Action, f32)> {
        [(Action::Block, self.block), (Action::Review, self.review)]
            .into_iter()
            .find_map(|(a, t)| t.filter(|t| score >= *t).map(|t| (a, t)))
    }

    fn check(&self, what: &str, lo: f32, hi: f32, errors: &mut Vec<String>) {
        for (name, t) in [("review", self.review), ("block", self.block)] {
            if let Some(t) = t {
                if !(lo..=hi).contains(&t) {
                    errors.push(format!("{what}.{name} = {t} is outside [{lo}, {hi}]"));
                }
            }
        }
        if let (Some(r), Some(b)) = (self.review, self.block) {
            if b < r {
                errors.push(format!("{what}: block ({b}) is below review ({r})"));
            }
        }
    }
}

/// A text category: policy phrases compared by meaning, exact terms compared by word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// Name (in records and metrics).
    pub name: String,
    /// Phrases whose meaning the category stands for.
    #[serde(default)]
    pub phrases: Vec<String>,
    /// Thresholds on the best cosine similarity to a phrase.
    #[serde(default)]
    pub similarity: Thresholds,
    /// Words or word sequences matched exactly (case- and accent-insensitive, on word
    /// boundaries).
    #[serde(default)]
    pub terms: Vec<String>,
    /// What a term found does.
    #[serde(default = "review")]
    pub term_action: Action,
    /// Labels of the image classifier pack (`[tags] packs`, e.g. ImageNet's "assault rifle")
    /// that stand for the category in an image, matched case-insensitively.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Thresholds on the best such label's probability.
    #[serde(default)]
    pub label_score: Thresholds,
}

fn review() -> Action {
    Action::Review
}

/// A moderation policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Thresholds on the NSFW score.
    #[serde(default)]
    pub nsfw: Thresholds,
    /// Text categories.
    #[serde(default)]
    pub categories: Vec<Category>,
}

/// A tenant's changes to the policy: thresholds replaced where given, categories by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// NSFW thresholds (each given value replaces the default's).
    #[serde(default)]
    pub nsfw: Thresholds,
    /// Per category name: thresholds and action replaced where given.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryOverride>,
}

/// A tenant's changes to one category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryOverride {
    /// Similarity thresholds (each given value replaces the default's).
    #[serde(default)]
    pub similarity: Thresholds,
    /// Term action.
    #[serde(default)]
    pub term_action: Option<Action>,
    /// Label thresholds (each given value replaces the default's).
    #[serde(default)]
    pub label_score: Thresholds,
}

impl Policy {
    /// Problems with the policy, all of them.
    pub fn validate(&self, what: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.nsfw
            .check(&format!("{what}.nsfw"), 0.0, 1.0, &mut errors);
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.categories {
            let at = format!("{what}.categories[{}]", c.name);
            if c.name.is_empty() || !seen.insert(c.name.as_str()) {
                errors.push(format!("{at}: category names must be unique and non-empty"));
            }
            if c.phrases.is_empty() && c.terms.is_empty() && c.labels.is_empty() {
                errors.push(format!("{at}: give phrases, terms or labels"));
            }
            if !c.labels.is_empty() && c.label_score == Thresholds::default() {
                errors.push(format!(
                    "{at}: labels without label_score thresholds never fire"
                ));
            }
            if !c.phrases.is_empty() && c.similarity == Thresholds::default() {
                errors.push(format!(
                    "{at}: phrases without similarity thresholds never fire"
                ));
            }
            if c.phrases
                .iter()
                .chain(&c.terms)
                .chain(&c.labels)
                .any(|p| p.trim().is_empty())
            {
                errors.push(format!("{at}: empty phrase, term or label"));
            }
            c.similarity
                .check(&format!("{at}.similarity"), -1.0, 1.0, &mut errors);
            c.label_score
                .check(&format!("{at}.label_score"), 0.0, 1.0, &mut errors);
        }
        errors
    }

    /// This policy with a tenant's override applied; unknown category names are errors.
    pub fn with_override(&self, o: &PolicyOverride) -> Result<Policy, String> {
        let mut p = self.clone();
        p.nsfw.review = o.nsfw.review.or(p.nsfw.review);
        p.nsfw.block = o.nsfw.block.or(p.nsfw.block);
        for (name, co) in &o.categories {
            let c = p
                .categories
                .iter_mut()
                .find(|c| &c.name == name)
                .ok_or_else(|| format!("category {name:?} is not in the default policy"))?;
            c.similarity.review = co.similarity.review.or(c.similarity.review);
            c.similarity.block = co.similarity.block.or(c.similarity.block);
            c.label_score.review = co.label_score.review.or(c.label_score.review);
            c.label_score.block = co.label_score.block.or(c.label_score.block);
            if let Some(a) = co.term_action {
                c.term_action = a;
            }
        }
        Ok(p)
    }

    /// The exact terms of every category found in `text`.
    pub fn find_terms(&self, text: &str, source: TextSource) -> Vec<TermHit> {
        let words = words_of(text);
        let mut hits = Vec::new();
        for c in &self.categories {
            for term in &c.terms {
                let tw = words_of(term);
                if !tw.is_empty() && words.windows(tw.len()).any(|w| w == tw.as_slice()) {
                    hits.push(TermHit {
                        source,
                        category: c.name.clone(),
                        term: term.clone(),
                    });
                }
            }
        }
        hits
    }
}

/// The default policy and each tenant's (override applied).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    /// For events without a tenant or with one that has no override.
    pub default: Policy,
    /// Per tenant.
    pub tenants: BTreeMap<String, Policy>,
}

impl Policies {
    /// The policy for `tenant` and its name in records (`default` or the tenant).
    pub fn for_tenant(&self, tenant: Option<&str>) -> (&Policy, &str) {
        match tenant.and_then(|t| self.tenants.get_key_value(t)) {
            Some((name, p)) => (p, name.as_str()),
            None => (&self.default, "default"),
        }
    }
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiredRule {
    /// `nsfw`, `similarity:<category>`, `term:<category>`, `label:<category>`,
    /// `list:<id>`.
    pub rule: String,
    /// The text it read, for text rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TextSource>,
    /// The score.
    pub score: f32,
    /// The threshold reached (1 for a term).
    pub threshold: f32,
    /// Its action.
    pub action: Action,
    /// The phrase or term behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// The policy's decision for one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The most severe action fired (`allow` when none).
    pub action: Action,
    /// Every rule that fired, most severe first.
    pub rules: Vec<FiredRule>,
}

/// What `policy` does with an event whose signals are `signals`. Long: one loop per kind
/// of signal (model scores, phrase similarity, terms, hash-list and embedding-list
/// matches), each with its own firing condition.
pub fn verdict(policy: &Policy, signals: &Signals) -> Verdict {
    let mut rules = Vec::new();
    if let Some(score) = signals.nsfw {
        if let Some((action, threshold)) = policy.nsfw.action(score) {
            rules.push(FiredRule {
                rule: "nsfw".into(),
                source: None,
                score,
                threshold,
                action,
                evidence: None,
            });
        }
    }
    for s in &signals.similarity {
        let Some(c) = policy.categories.iter().find(|c| c.name == s.category) else {
            continue;
        };
        if let Some((action, threshold)) = c.similarity.action(s.score) {
            rules.push(FiredRule {
                rule: format!("similarity:{}", c.name),
                source: Some(s.source),
                score: s.score,
                threshold,
                action,
                evidence: Some(s.phrase.clone()),
            });
        }
    }
    for t in &signals.terms {
        let Some(c) = policy.categories.iter().find(|c| c.name == t.category) else {
            continue;
        };
        if c.term_action > Action::Allow {
            rules.push(FiredRule {
                rule: format!("term:{}", c.name),
                source: Some(t.source),
                score: 1.0,
                threshold: 1.0,
                action: c.term_action,
                evidence: Some(t.term.clone()),
            });
        }
    }
    for m in &signals.matches {
        if m.action > Action::Allow {
            // For a list, the score is the distance and fires at or under the threshold.
            rules.push(FiredRule {
                rule: format!("list:{}", m.list),
                source: None,
                score: m.distance as f32,
                threshold: m.max_distance as f32,
                action: m.action,
                evidence: Some(match &m.label {
                    Some(l) => format!("{} ({l})", m.item),
                    None => m.item.clone(),
                }),
            });
        }
    }
    rules.extend(label_rules(policy, &signals.image_labels));
    for m in &signals.embedding_matches {
        if m.action > Action::Allow {
            rules.push(FiredRule {
                rule: format!("list:{}", m.list),
                source: None,
                score: m.similarity,
                threshold: m.min_similarity,
                action: m.action,
                evidence: Some(match &m.label {
                    Some(l) => format!("{} ({l})", m.item),
                    None => m.item.clone(),
                }),
            });
        }
    }
    rules.sort_by_key(|r| std::cmp::Reverse(r.action));
    Verdict {
        action: rules.first().map_or(Action::Allow, |r| r.action),
        rules,
    }
}

/// Each category with labels fires on the image's most probable label among them.
fn label_rules(policy: &Policy, labels: &[ImageLabel]) -> Vec<FiredRule> {
    let mut rules = Vec::new();
    for c in policy.categories.iter().filter(|c| !c.labels.is_empty()) {
        let best = labels
            .iter()
            .filter(|l| c.labels.iter().any(|w| w.eq_ignore_ascii_case(&l.label)))
            .max_by(|a, b| a.score.total_cmp(&b.score));
        let Some(l) = best else { continue };
        if let Some((action, threshold)) = c.label_score.action(l.score) {
            rules.push(FiredRule {
                rule: format!("label:{}", c.name),
                source: None,
                score: l.score,
                threshold,
                action,
                evidence: Some(format!("{} ({})", l.label, l.source)),
            });
        }
    }
    rules
}

/// Lower-cased words of `text` with accents folded for the common Latin letters: the unit
/// of exact term matching.
fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().flat_map(char::to_lowercase).map(fold).collect())
        .collect()
}

/// Fold the accented Latin letters of Latin-1 and Latin Extended-A to their base letter.
fn fold(c: char) -> char {
    match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'è'..='ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ì'..='ï' | 'ī' | 'į' => 'i',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò'..='ö' | 'ø' | 'ō' | 'ő' => 'o',
        'ù'..='ü' | 'ū' | 'ů' | 'ű' => 'u',
        'ý' | 'ÿ' => 'y',
        'š' | 'ś' => 's',
        'ž' | 'ź' | 'ż' => 'z',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            nsfw: Thresholds {
                review: Some(0.5),
                block: Some(0.8),
            },
            categories: vec![
                Category {
                    name: "threat".into(),
                    phrases: vec!["I will hurt you".into()],
                    similarity: Thresholds {
                        review: Some(0.5),
                        block: Some(0.7),
                    },
                    terms: vec![],
                    term_action: Action::Review,
                    labels: vec![],
                    label_score: Thresholds::default(),
                },
                Category {
                    name: "scam".into(),
                    phrases: vec![],
                    similarity: Thresholds::default(),
                    terms: vec!["free crypto".into(), "wire transfer".into()],
                    term_action: Action::Block,
                    labels: vec![],
                    label_score: Thresholds::default(),
                },
            ],
        }
    }

    fn sim(category: &str, score: f32) -> Similarity {
        Similarity {
            source: TextSource::EventText,
            category: category.into(),
            score,
            phrase: "p".into(),
        }
    }

    #[test]
    fn the_most_severe_fired_rule_decides() {
        let p = policy();
        assert_eq!(verdict(&p, &Signals::default()).action, Action::Allow);
        let s = Signals {
            nsfw: Some(0.6),
            similarity: vec![sim("threat", 0.75)],
            ..Signals::default()
        };
        let v = verdict(&p, &s);
        assert_eq!(v.action, Action::Block);
        assert_eq!(v.rules.len(), 2);
        assert_eq!(v.rules[0].rule, "similarity:threat");
        assert_eq!(v.rules[0].threshold, 0.7);
        assert_eq!(v.rules[1].action, Action::Review);
        // Below every threshold: nothing fires.
        let s = Signals {
            nsfw: Some(0.49),
            similarity: vec![sim("threat", 0.2)],
            ..Signals::default()
        };
        assert_eq!(verdict(&p, &s), Verdict::default());
        // Exactly at a threshold fires.
        let s = Signals {
            nsfw: Some(0.8),
            ..Signals::default()
        };
        assert_eq!(verdict(&p, &s).action, Action::Block);
    }

    #[test]
    fn terms_match_whole_words_case_and_accent_insensitively() {
        let p = policy();
        let hits = p.find_terms("Get FREE   crypto now", TextSource::ImageText);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].term, "free crypto");
        assert_eq!(hits[0].source, TextSource::ImageText);
        assert!(p.find_terms("freecrypto", TextSource::EventText).is_empty());
        assert!(p
            .find_terms("free cryptography", TextSource::EventText)
            .is_empty());
        let mut q = policy();
        q.categories[1].terms = vec!["café".into()];
        assert_eq!(q.find_terms("Cafe!", TextSource::EventText).len(), 1);
        let v = verdict(
            &p,
            &Signals {
                terms: p.find_terms("please wire transfer", TextSource::EventText),
                ..Signals::default()
            },
        );
        assert_eq!(v.action, Action::Block);
        assert_eq!(v.rules[0].evidence.as_deref(), Some("wire transfer"));
    }

    #[test]
    fn tenant_overrides_replace_given_values_only() {
        let p = policy();
        let mut o = PolicyOverride::default();
        o.nsfw.block = Some(0.95);
        o.categories.insert(
            "scam".into(),
            CategoryOverride {
                similarity: Thresholds::default(),
                term_action: Some(Action::Review),
                label_score: Thresholds::default(),
            },
        );
        let t = p.with_override(&o).expect("valid");
        assert_eq!(t.nsfw.review, Some(0.5));
        assert_eq!(t.nsfw.block, Some(0.95));
        assert_eq!(t.categories[1].term_action, Action::Review);
        assert_eq!(t.categories[0], p.categories[0]);
        o.categories
            .insert("nope".into(), CategoryOverride::default());
        assert!(p.with_override(&o).expect_err("unknown").contains("nope"));
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut p = policy();
        p.nsfw.review = Some(1.5);
        p.categories[0].similarity.block = Some(0.4);
        p.categories.push(Category {
            name: "threat".into(),
            phrases: vec![],
            similarity: Thresholds::default(),
            terms: vec![],
            term_action: Action::Review,
            labels: vec![],
            label_score: Thresholds::default(),
        });
        let e = p.validate("moderation");
        // Out of range, block below review (twice), a duplicate name, a category of nothing.
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(policy().validate("moderation").is_empty());
    }

    #[test]
    fn a_category_of_labels_fires_on_the_best_label_among_them() {
        let mut p = policy();
        p.categories.push(Category {
            name: "weapons".into(),
            phrases: vec![],
            similarity: Thresholds::default(),
            terms: vec![],
            term_action: Action::Review,
            labels: vec!["assault rifle".into(), "Revolver".into()],
            label_score: Thresholds {
                review: Some(0.3),
                block: Some(0.8),
            },
        });
        assert!(p.validate("moderation").is_empty());
        let label = |label: &str, score: f32| ImageLabel {
            label: label.into(),
            score,
            source: "imagenet".into(),
        };
        let s = |labels| Signals {
            image_labels: labels,
            ..Signals::default()
        };
        // Case-insensitive; the best of the category's labels decides.
        let v = verdict(&p, &s(vec![label("revolver", 0.4), label("tabby", 0.5)]));
        assert_eq!(v.action, Action::Review);
        assert_eq!(v.rules[0].rule, "label:weapons");
        assert_eq!(v.rules[0].evidence.as_deref(), Some("revolver (imagenet)"));
        let v = verdict(
            &p,
            &s(vec![label("assault rifle", 0.85), label("revolver", 0.4)]),
        );
        assert_eq!((v.action, v.rules.len()), (Action::Block, 1));
        assert_eq!(v.rules[0].threshold, 0.8);
        // Under the thresholds, or labels of no category: nothing.
        assert_eq!(
            verdict(&p, &s(vec![label("revolver", 0.2)])).action,
            Action::Allow
        );
        assert_eq!(
            verdict(&p, &s(vec![label("tabby", 0.99)])).action,
            Action::Allow
        );
        // Labels without thresholds are refused.
        p.categories[2].label_score = Thresholds::default();
        assert_eq!(p.validate("moderation").len(), 1);
    }

    fn action_strategy() -> impl Strategy<Value = Option<f32>> {
        prop_oneof![Just(None), (0.0f32..1.0).prop_map(Some)]
    }

    proptest! {
        /// Raising any score never lowers the decision, and the fired rules are exactly the
        /// thresholds reached.
        #[test]
        fn decisions_are_monotone(
            nsfw in 0.0f32..1.0,
            bump in 0.0f32..0.5,
            t in -1.0f32..1.0,
            r in action_strategy(),
            b in action_strategy(),
        ) {
            let mut p = policy();
            p.nsfw = Thresholds { review: r, block: b };
            let lo = Signals { nsfw: Some(nsfw), similarity: vec![sim("threat", t)], ..Signals::default() };
            let hi = Signals {
                nsfw: Some((nsfw + bump).min(1.0)),
                similarity: vec![sim("threat", (t + bump).min(1.0))],
                ..Signals::default()
            };
            let (vl, vh) = (verdict(&p, &lo), verdict(&p, &hi));
            prop_assert!(vh.action >= vl.action);
            prop_assert!(vh.rules.len() >= vl.rules.len());
            for rule in vl.rules.iter().chain(&vh.rules) {
                prop_assert!(rule.score >= rule.threshold);
            }
            let expect_nsfw = r.is_some_and(|r| nsfw >= r) || b.is_some_and(|b| nsfw >= b);
            prop_assert_eq!(vl.rules.iter().any(|x| x.rule == "nsfw"), expect_nsfw);
            // A missing signal fires nothing.
            let none = Signals { nsfw: None, ..lo.clone() };
            prop_assert!(verdict(&p, &none).rules.iter().all(|x| x.rule != "nsfw"));
        }
    }
}

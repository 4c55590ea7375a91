//! The CPU half of an event's intake: its modalities prepared for the model (image decoded
//! and resized, text and question tokenised) or the reason code each is unusable, and how
//! that reads in the degradation matrix (availability, `degraded` entries).

use fusionstream_core::degrade::{Availability, Degradation};
use fusionstream_core::event::{Event, Input};
use fusionstream_core::moderation::ListMatch;
use fusionstream_core::task::{Task, TaskSet};
use fusionstream_core::ReasonCode;
use fusionstream_model::moderation::{ModerationInput, ModerationModels};
use fusionstream_model::pdq::Pdq;
use fusionstream_model::photo::PhotoInput;
use fusionstream_model::preprocess::RgbImage;

use super::known_lists::KnownLists;
use fusionstream_model::tokenize::Tokens;
use fusionstream_model::{FusionModel, PreparedImage};

/// Whether a modality of the event can be used, as the degradation matrix sees it.
pub(crate) fn availability<T>(i: &Input<T>) -> Availability {
    match i {
        Input::Absent => Availability::Absent,
        Input::Present(_) => Availability::Usable,
        Input::Unusable(r) => Availability::Unusable(*r),
    }
}

/// The event's unusable modalities, as `degraded` entries.
pub(crate) fn degradations(e: &Event) -> Vec<Degradation> {
    degradations_of(
        &availability(&e.image),
        &availability(&e.text),
        &availability(&e.question),
    )
}

/// The unusable modalities among these, as `degraded` entries.
pub(crate) fn degradations_of(
    i: &Availability,
    t: &Availability,
    q: &Availability,
) -> Vec<Degradation> {
    use fusionstream_core::degrade::Modality;
    [
        (Modality::Image, i),
        (Modality::Text, t),
        (Modality::Question, q),
    ]
    .into_iter()
    .filter_map(|(m, a)| match a {
        Availability::Unusable(r) => Some(Degradation {
            modality: m,
            reason: *r,
        }),
        _ => None,
    })
    .collect()
}

/// CPU results: each modality prepared, or the reason code it is unusable, and the
/// moderation models' inputs when the event asks for `moderate` and the worker serves it.
pub(crate) struct Preprocessed {
    pub(crate) image: Result<Option<PreparedImage>, ReasonCode>,
    /// The text's tokens (saying whether they were cut to the model's positions).
    pub(crate) text: Result<Option<Tokens>, ReasonCode>,
    pub(crate) question: Result<Option<Tokens>, ReasonCode>,
    pub(crate) moderation: Option<ModerationInput>,
    /// The photo packs' inputs, when the event asks for `tag` or `embed`, the worker loads
    /// the pack for it and the image is usable.
    pub(crate) photo: Option<PhotoInput>,
    /// The image's PDQ hash, when the event asks for `hash` and has a usable image.
    pub(crate) pdq: Option<Pdq>,
    /// Known-hash list entries the image matches (with `moderate` and lists configured).
    pub(crate) matches: Vec<ListMatch>,
}

/// Decode and resize the image, tokenise text and question (on the blocking pool, under a
/// CPU slot): each prepared, or the reason code it is unusable. With `moderate` (and the
/// worker's moderation models), `hash`, or `tag`/`embed` with a photo pack for them, the
/// image is decoded once — as Pillow decodes it, the pixels the packs and PDQ's reference
/// were measured on — for every model and the hash.
pub(crate) fn prepare(
    model: &FusionModel,
    image: Option<Result<Vec<u8>, ReasonCode>>,
    text: Option<String>,
    question: Option<String>,
    tasks: TaskSet,
    lists: Option<&KnownLists>,
) -> Preprocessed {
    let moderation_models = model
        .moderation()
        .filter(|_| tasks.contains(Task::Moderate));
    let hash = tasks.contains(Task::Hash);
    let photo_work = model.photo_work(tasks);
    if moderation_models.is_some() || hash || photo_work.is_some() {
        let limits = &model.decode_options().limits;
        let decoded = image.map(|r| {
            r.and_then(|bytes| {
                match moderation_models {
                    Some(m) => m.decode(&bytes, limits),
                    None => fusionstream_model::preprocess::decode_like_pillow(&bytes, limits),
                }
                .map_err(|e| e.reason_code())
            })
        });
        let pdq = match (&decoded, hash) {
            (Some(Ok(rgb)), true) => Some(fusionstream_model::pdq::hash_image(rgb)),
            _ => None,
        };
        let matches = match (&decoded, lists, moderation_models.is_some()) {
            (Some(Ok(rgb)), Some(l), true) => l.matches(&fusionstream_model::pdq::dihedral_rgb(
                &rgb.data,
                rgb.width as usize,
                rgb.height as usize,
            )),
            _ => Vec::new(),
        };
        let prepared_image = match &decoded {
            None => Ok(None),
            Some(Err(code)) => Err(*code),
            Some(Ok(rgb)) => model
                .prepare_decoded(rgb)
                .map(Some)
                .map_err(|e| e.reason_code()),
        };
        let moderation =
            moderation_models.map(|m| moderation_inputs(m, decoded.as_ref(), text.as_deref()));
        let photo = match (photo_work, &decoded) {
            (Some((p, tag, embed)), Some(Ok(rgb))) => Some(p.prepare(rgb, tag, embed)),
            _ => None,
        };
        return Preprocessed {
            image: prepared_image,
            text: tokens(model, text),
            question: question_tokens(model, question),
            moderation,
            photo,
            pdq,
            matches,
        };
    }
    Preprocessed {
        moderation: None,
        photo: None,
        pdq: None,
        matches: Vec::new(),
        image: match image {
            None => Ok(None),
            Some(Err(code)) => Err(code),
            Some(Ok(bytes)) => model
                .prepare_image(&bytes)
                .map(Some)
                .map_err(|e| e.reason_code()),
        },
        text: tokens(model, text),
        question: question_tokens(model, question),
    }
}

/// The moderation packs' inputs of an event: its decoded image (or why it has none) and
/// its text.
fn moderation_inputs(
    m: &ModerationModels,
    decoded: Option<&Result<RgbImage, ReasonCode>>,
    text: Option<&str>,
) -> ModerationInput {
    m.prepare(decoded.map(|d| d.as_ref().map_err(|c| *c)), text)
        .unwrap_or_else(|e| {
            // Preparing the packs' inputs of a decoded image cannot fail on the image; should
            // it, the signals are missing, not the event.
            tracing::warn!(error = %e, "moderation inputs could not be prepared");
            ModerationInput {
                missing: vec![(
                    "moderation".into(),
                    ReasonCode::InternalError.as_str().into(),
                )],
                ..ModerationInput::default()
            }
        })
}

fn tokens(model: &FusionModel, text: Option<String>) -> Result<Option<Tokens>, ReasonCode> {
    match text {
        None => Ok(None),
        Some(t) => model
            .tokenize_text(&t)
            .map_err(|_| ReasonCode::TextUntokenizable),
    }
}

fn question_tokens(
    model: &FusionModel,
    question: Option<String>,
) -> Result<Option<Tokens>, ReasonCode> {
    match question {
        None => Ok(None),
        Some(q) => model
            .tokenize_question(&q)
            .map_err(|_| ReasonCode::QuestionUntokenizable),
    }
}

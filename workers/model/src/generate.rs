//! Token generation over any decoder with a KV cache: greedy and beam search, batched.
//!
//! Both reproduce transformers' `generate` (v5.17, `generation/utils.py`): greedy takes the
//! argmax of the last logits; beam search is `_beam_search` with its defaults
//! (`length_penalty = 1.0`, `early_stopping = False`): 2·K candidates per step, a finished
//! hypothesis scored `sum_logprobs / generated_len ** length_penalty`, only candidates
//! among the top K can finish, and the early-stop heuristic of `_check_early_stop_heuristic`.
//! The token ids match transformers' exactly (checked by the parity tests).

use candle_core::{Tensor, D};

use crate::error::{ModelError, Result};

/// Logits of the last position of each row, wherever the decoder keeps them.
pub trait StepLogits {
    /// Index of the largest logit of each row (first on ties), as `torch.argmax`.
    fn argmax(&self) -> Result<Vec<u32>>;
    /// Every row on the host, in f32.
    fn rows(&self) -> Result<Vec<Vec<f32>>>;
}

impl StepLogits for Tensor {
    fn argmax(&self) -> Result<Vec<u32>> {
        Ok(self.argmax(D::Minus1)?.to_vec1()?)
    }

    fn rows(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self.to_dtype(candle_core::DType::F32)?.to_vec2()?)
    }
}

/// Logits already on the host: `rows` × `vocab`, row-major.
#[derive(Debug, Clone)]
pub struct HostLogits {
    /// The values.
    pub data: Vec<f32>,
    /// Row length.
    pub vocab: usize,
}

impl StepLogits for HostLogits {
    fn argmax(&self) -> Result<Vec<u32>> {
        Ok(self
            .data
            .chunks(self.vocab.max(1))
            .map(|row| {
                let mut best = 0;
                for (i, &x) in row.iter().enumerate() {
                    // NaN never wins; the first maximum wins ties.
                    if x > row[best] {
                        best = i;
                    }
                }
                best as u32
            })
            .collect())
    }

    fn rows(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .data
            .chunks(self.vocab.max(1))
            .map(<[f32]>::to_vec)
            .collect())
    }
}

/// A decoder that can extend a batch of sequences by one step, keeping its own cache.
pub trait StepDecoder {
    /// Per-batch decoding state (KV cache, encoder states).
    type State;
    /// What a step returns.
    type Logits: StepLogits;
    /// Logits for the last position of `ids` (`rows` × `t`, row-major), continuing `state`.
    fn step(&self, ids: &[u32], t: usize, state: &mut Self::State) -> Result<Self::Logits>;
    /// Rebuild the state from rows of itself: new row i is old row `rows[i]`.
    fn select_rows(&self, state: &mut Self::State, rows: &[u32]) -> Result<()>;
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Most tokens generated after the prompt (transformers' `max_new_tokens`).
    pub max_new_tokens: usize,
    /// 1: greedy; more: beam search with that many beams.
    pub num_beams: usize,
    /// Exponent of the length normalisation of finished beams.
    pub length_penalty: f32,
    /// Token that ends a sequence.
    pub eos_token_id: u32,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            num_beams: 1,
            length_penalty: 1.0,
            eos_token_id: 102,
        }
    }
}

/// Generate for `batch` rows that all start from `prompt`; `state` holds `batch` rows.
/// Returns per row the prompt followed by the generated tokens (EOS included when reached).
pub fn generate<M: StepDecoder>(
    model: &M,
    state: M::State,
    prompt: &[u32],
    batch: usize,
    params: &GenerationParams,
) -> Result<Vec<Vec<u32>>> {
    if prompt.is_empty() {
        return Err(ModelError::Input(
            "generation needs a non-empty prompt".into(),
        ));
    }
    if params.num_beams <= 1 {
        greedy(model, state, prompt, batch, params)
    } else {
        beam_search(model, state, prompt, batch, params)
    }
}

fn prompt_ids(prompt: &[u32], rows: usize) -> Vec<u32> {
    (0..rows).flat_map(|_| prompt.iter().copied()).collect()
}

fn rows_u32(rows: &[usize]) -> Vec<u32> {
    rows.iter().map(|&r| r as u32).collect()
}

/// Greedy decoding. Finished rows leave the batch (their cache rows are dropped), which
/// changes nothing for the others: rows never interact.
fn greedy<M: StepDecoder>(
    model: &M,
    mut state: M::State,
    prompt: &[u32],
    batch: usize,
    params: &GenerationParams,
) -> Result<Vec<Vec<u32>>> {
    let mut out: Vec<Vec<u32>> = vec![prompt.to_vec(); batch];
    // `active[i]` is the output row of state row i.
    let mut active: Vec<usize> = (0..batch).collect();
    let mut ids = prompt_ids(prompt, batch);
    let mut t = prompt.len();
    for _ in 0..params.max_new_tokens {
        let next = model.step(&ids, t, &mut state)?.argmax()?;
        let mut keep = Vec::with_capacity(active.len());
        for (i, (&row, &tok)) in active.iter().zip(&next).enumerate() {
            out[row].push(tok);
            if tok != params.eos_token_id {
                keep.push(i);
            }
        }
        if keep.is_empty() {
            break;
        }
        ids = keep.iter().map(|&i| next[i]).collect();
        t = 1;
        if keep.len() != active.len() {
            model.select_rows(&mut state, &rows_u32(&keep))?;
            active = keep.iter().map(|&i| active[i]).collect();
        }
    }
    Ok(out)
}

const NEG: f32 = -1.0e9;

#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// Row-wise log-softmax in f32, as `torch.nn.functional.log_softmax`.
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let lse = sum.ln();
    row.iter().map(|&x| x - max - lse).collect()
}

/// Indices of the `k` largest values, descending, ties to the lower index.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
        values[b].total_cmp(&values[a]).then(a.cmp(&b))
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx
}

/// One step of beam search, for every row alike.
struct Step<'a> {
    k: usize,
    vocab: usize,
    prompt_len: usize,
    cur_len: usize,
    max_length: usize,
    params: &'a GenerationParams,
}

impl Step<'_> {
    /// One row's step, as transformers' beam scorer takes it: the best `2k` continuations of
    /// its beams; the best `k` that did not stop run on (with the beam each continues), the
    /// ones that stopped merge into the row's finished hypotheses (length-normalised). Also
    /// whether every candidate stopped.
    fn row(
        &self,
        logits: &[Vec<f32>],
        running: &[Hyp],
        finished: &mut Vec<Hyp>,
        unsatisfied: bool,
    ) -> (Vec<(usize, Hyp)>, bool) {
        let (k, vocab) = (self.k, self.vocab);
        // Accumulated log-probs of every continuation of every beam.
        let mut acc = Vec::with_capacity(k * vocab);
        for (beam, hyp) in running.iter().enumerate() {
            let lp = log_softmax(&logits[beam]);
            acc.extend(lp.into_iter().map(|x| x + hyp.score));
        }
        let cands = top_k(&acc, 2 * k);
        let hits: Vec<bool> = cands
            .iter()
            .map(|&c| {
                (c % vocab) as u32 == self.params.eos_token_id
                    || self.cur_len + 1 >= self.max_length
            })
            .collect();
        let all_hit = hits.iter().all(|&h| h);
        let cand_seq = |c: usize| {
            let mut t = running[c / vocab].tokens.clone();
            t.push((c % vocab) as u32);
            t
        };
        // Next running beams: the best K that did not stop.
        let run_scores: Vec<f32> = cands
            .iter()
            .zip(&hits)
            .map(|(&c, &h)| acc[c] + if h { NEG } else { 0.0 })
            .collect();
        let next_running: Vec<(usize, Hyp)> = top_k(&run_scores, k)
            .into_iter()
            .map(|j| {
                let c = cands[j];
                let hyp = Hyp {
                    tokens: cand_seq(c),
                    score: run_scores[j],
                    finished: false,
                };
                (c / vocab, hyp)
            })
            .collect();
        // Finished hypotheses: merge the old ones with candidates that just stopped.
        let norm = ((self.cur_len + 1 - self.prompt_len) as f32).powf(self.params.length_penalty);
        let mut merged: Vec<Hyp> = finished.clone();
        for (j, (&c, &h)) in cands.iter().zip(&hits).enumerate() {
            let just_finished = h && j < k;
            let mut s = acc[c] / norm;
            if !unsatisfied {
                s += NEG;
            }
            if !just_finished {
                s += NEG;
            }
            merged.push(Hyp {
                tokens: cand_seq(c),
                score: s,
                finished: just_finished,
            });
        }
        let scores: Vec<f32> = merged.iter().map(|h| h.score).collect();
        *finished = top_k(&scores, k)
            .into_iter()
            .map(|i| merged[i].clone())
            .collect();
        (next_running, all_hit)
    }
}

/// Beam search as transformers runs it (same candidates, scores, early stop), every row's
/// `num_beams` beams in one batch. Long: the state of the search (running, finished,
/// unsatisfied rows) lives across the loop; each row's step is [`Step::row`].
fn beam_search<M: StepDecoder>(
    model: &M,
    mut state: M::State,
    prompt: &[u32],
    batch: usize,
    params: &GenerationParams,
) -> Result<Vec<Vec<u32>>> {
    let k = params.num_beams;
    let p = prompt.len();
    let max_length = p + params.max_new_tokens;
    // Every row becomes K beams.
    let expand: Vec<usize> = (0..batch).flat_map(|b| std::iter::repeat_n(b, k)).collect();
    model.select_rows(&mut state, &rows_u32(&expand))?;

    let init = |first: f32| -> Vec<Hyp> {
        (0..k)
            .map(|i| Hyp {
                tokens: prompt.to_vec(),
                score: if i == 0 { first } else { NEG },
                finished: false,
            })
            .collect()
    };
    let mut running: Vec<Vec<Hyp>> = (0..batch).map(|_| init(0.0)).collect();
    let mut finished: Vec<Vec<Hyp>> = (0..batch).map(|_| init(NEG)).collect();
    let mut unsatisfied = vec![true; batch];
    let mut ids = prompt_ids(prompt, batch * k);
    let mut t = p;
    let mut cur_len = p;

    if params.max_new_tokens == 0 {
        return Ok(vec![prompt.to_vec(); batch]);
    }
    loop {
        let logits: Vec<Vec<f32>> = model.step(&ids, t, &mut state)?.rows()?;
        let vocab = logits.first().map(Vec::len).unwrap_or(0);
        let mut reorder = Vec::with_capacity(batch * k);
        let mut next_tokens = Vec::with_capacity(batch * k);
        let mut all_hit = true;
        let step = Step {
            k,
            vocab,
            prompt_len: p,
            cur_len,
            max_length,
            params,
        };
        for b in 0..batch {
            let rows = &logits[b * k..(b + 1) * k];
            let (next_running, hit) = step.row(rows, &running[b], &mut finished[b], unsatisfied[b]);
            all_hit &= hit;
            for (beam, hyp) in &next_running {
                reorder.push(b * k + beam);
                next_tokens.push(*hyp.tokens.last().unwrap_or(&0));
            }
            running[b] = next_running.into_iter().map(|(_, h)| h).collect();
        }
        cur_len += 1;
        // Early-stop heuristic, per row.
        for b in 0..batch {
            let best = running[b][0].score / ((cur_len - p) as f32).powf(params.length_penalty);
            let min_fin = finished[b]
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
            let improvable = finished[b]
                .iter()
                .any(|h| best > if h.finished { min_fin } else { NEG });
            unsatisfied[b] &= improvable;
        }
        if !unsatisfied.iter().any(|&u| u) || all_hit {
            break;
        }
        model.select_rows(&mut state, &rows_u32(&reorder))?;
        ids = next_tokens;
        t = 1;
    }
    Ok(finished
        .into_iter()
        .map(|mut f| f.swap_remove(0).tokens)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_descending_with_low_index_ties() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
        assert_eq!(top_k(&[0.5], 4), vec![0]);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn host_argmax_takes_the_first_maximum() {
        let l = HostLogits {
            data: vec![0.0, 2.0, 2.0, -1.0, 5.0, -3.0],
            vocab: 3,
        };
        assert_eq!(l.argmax().unwrap(), vec![1, 1]);
        assert_eq!(l.rows().unwrap()[1][2], -3.0);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(lp[2] > lp[1] && lp[1] > lp[0]);
    }
}

//! Batch failure isolation: when a batch fails, find the item(s) that make it fail by
//! bisection, so that one poison item costs the others nothing.
//!
//! A failed call is classified by the caller ([`Failure`]): an error that cannot depend on
//! the items (the runtime is gone) ends the isolation at once; any other failure of a batch
//! of several items splits it in halves and runs each half, recursively, until every item
//! either has its output or has failed alone. Out-of-memory is the same search (smaller
//! batches first), recorded apart because its cause is the batch's size rather than an
//! item's content. A panic in the call is the caller's to turn into a failure (the model
//! thread runs each call under `catch_unwind`).
//!
//! Cost: a batch of `n` items with `k` poison items takes at most `1 + 2k⌈log2 n⌉` calls; a
//! batch that succeeds takes one.

/// What a failed call says about its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Possibly caused by an item: split and retry the halves.
    Item,
    /// The batch was too large for the device's memory: split and retry the halves.
    OutOfMemory,
    /// Not an item's doing (device lost, library gone): stop, fail the whole batch.
    Fatal,
}

/// The outcome of isolating one batch.
#[derive(Debug)]
pub struct Isolated<O, E> {
    /// Per item, in batch order: its output, or the error of the call in which it failed
    /// alone.
    pub results: Vec<Result<O, E>>,
    /// Calls made (1 when the batch succeeded at once).
    pub calls: usize,
    /// Batches split in halves.
    pub splits: usize,
    /// Splits caused by out-of-memory.
    pub oom_splits: usize,
}

impl<O, E> Isolated<O, E> {
    /// Items that failed alone.
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| r.is_err()).count()
    }
}

/// Run `call` on the items `0..n` (it receives the indices of a sub-batch, in order, and
/// returns one output per index), isolating failures as the module explains. `Err` only for
/// a [`Failure::Fatal`] error.
pub fn isolate<O, E>(
    n: usize,
    mut call: impl FnMut(&[usize]) -> Result<Vec<O>, E>,
    classify: impl Fn(&E) -> Failure,
) -> Result<Isolated<O, E>, E> {
    let mut results: Vec<Option<Result<O, E>>> = (0..n).map(|_| None).collect();
    let mut out = Isolated {
        results: Vec::new(),
        calls: 0,
        splits: 0,
        oom_splits: 0,
    };
    // Depth-first over sub-batches, left half first, so results fill in batch order.
    let mut stack: Vec<Vec<usize>> = vec![(0..n).collect()];
    while let Some(items) = stack.pop() {
        if items.is_empty() {
            continue;
        }
        out.calls += 1;
        match call(&items) {
            Ok(outputs) => {
                debug_assert_eq!(outputs.len(), items.len(), "one output per item");
                for (i, o) in items.iter().zip(outputs) {
                    results[*i] = Some(Ok(o));
                }
            }
            Err(e) => match classify(&e) {
                Failure::Fatal => return Err(e),
                _ if items.len() == 1 => results[items[0]] = Some(Err(e)),
                kind => {
                    out.splits += 1;
                    if kind == Failure::OutOfMemory {
                        out.oom_splits += 1;
                    }
                    let (left, right) = items.split_at(items.len() / 2);
                    stack.push(right.to_vec());
                    stack.push(left.to_vec());
                }
            },
        }
    }
    out.results = results
        .into_iter()
        .map(|r| r.expect("every item is settled by a call of its own or of a batch"))
        .collect();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone, PartialEq)]
    enum E {
        Poison(Vec<usize>),
        Oom(usize),
        Gone,
    }

    fn classify(e: &E) -> Failure {
        match e {
            E::Poison(_) => Failure::Item,
            E::Oom(_) => Failure::OutOfMemory,
            E::Gone => Failure::Fatal,
        }
    }

    /// Fails a call that contains a poison index or more than `cap` items.
    fn model(
        poison: &BTreeSet<usize>,
        cap: usize,
    ) -> impl FnMut(&[usize]) -> Result<Vec<u64>, E> + '_ {
        move |items: &[usize]| {
            let bad: Vec<usize> = items
                .iter()
                .copied()
                .filter(|i| poison.contains(i))
                .collect();
            if !bad.is_empty() {
                return Err(E::Poison(bad));
            }
            if items.len() > cap {
                return Err(E::Oom(items.len()));
            }
            Ok(items.iter().map(|i| *i as u64 * 10).collect())
        }
    }

    #[test]
    fn a_good_batch_takes_one_call() {
        let none = BTreeSet::new();
        let r = isolate(8, model(&none, 64), classify).unwrap();
        assert_eq!(r.calls, 1);
        assert_eq!(r.splits, 0);
        let outs: Vec<u64> = r.results.into_iter().map(Result::unwrap).collect();
        assert_eq!(outs, vec![0, 10, 20, 30, 40, 50, 60, 70]);
    }

    #[test]
    fn one_poison_item_fails_alone() {
        let poison = BTreeSet::from([5]);
        let r = isolate(8, model(&poison, 64), classify).unwrap();
        for (i, res) in r.results.iter().enumerate() {
            match res {
                Ok(o) => assert_eq!(*o, i as u64 * 10),
                Err(e) => {
                    assert_eq!(i, 5);
                    assert_eq!(*e, E::Poison(vec![5]));
                }
            }
        }
        assert_eq!(r.failures(), 1);
        // 8 → 4+4 → 2+2 → 1+1: one call for the whole, two per level below it.
        assert_eq!(r.calls, 7);
    }

    #[test]
    fn a_fatal_error_stops_at_once() {
        let mut calls = 0;
        let r = isolate(
            8,
            |_: &[usize]| -> Result<Vec<u64>, E> {
                calls += 1;
                Err(E::Gone)
            },
            classify,
        );
        assert_eq!(r.unwrap_err(), E::Gone);
        assert_eq!(calls, 1);
    }

    #[test]
    fn out_of_memory_shrinks_the_batch_until_it_fits() {
        let none = BTreeSet::new();
        let r = isolate(16, model(&none, 4), classify).unwrap();
        assert_eq!(r.failures(), 0);
        assert_eq!(r.oom_splits, 3, "16 → 8+8 → four batches of 4");
        assert_eq!(r.splits, 3);
    }

    #[test]
    fn an_item_too_big_even_alone_fails_alone() {
        let none = BTreeSet::new();
        let r = isolate(3, model(&none, 0), classify).unwrap();
        assert_eq!(r.failures(), 3);
        assert!(r.results.iter().all(|r| matches!(r, Err(E::Oom(1)))));
    }

    #[test]
    fn an_empty_batch_makes_no_call() {
        let none = BTreeSet::new();
        let r = isolate(0, model(&none, 4), classify).unwrap();
        assert_eq!(r.calls, 0);
        assert!(r.results.is_empty());
    }

    proptest! {
        #[test]
        fn good_items_get_their_outputs_and_only_poison_fails(
            n in 1usize..80,
            poison in proptest::collection::btree_set(0usize..80, 0..6),
            cap in 1usize..100,
        ) {
            let poison: BTreeSet<usize> = poison.into_iter().filter(|i| *i < n).collect();
            let r = isolate(n, model(&poison, cap), classify).unwrap();
            prop_assert_eq!(r.results.len(), n);
            for (i, res) in r.results.iter().enumerate() {
                if poison.contains(&i) {
                    prop_assert_eq!(res.as_ref().unwrap_err(), &E::Poison(vec![i]));
                } else {
                    prop_assert_eq!(res.as_ref().ok(), Some(&(i as u64 * 10)));
                }
            }
            if cap >= n {
                // Without memory pressure: at most 1 + 2k⌈log2 n⌉ calls.
                let depth = usize::BITS - (n - 1).leading_zeros();
                prop_assert!(r.calls <= 1 + 2 * poison.len() * depth as usize,
                    "{} calls for n={} k={}", r.calls, n, poison.len());
            }
            if poison.is_empty() && cap >= n {
                prop_assert_eq!(r.calls, 1);
            }
        }
    }
}

//! One bounded parallel map for independent jobs (downloads, package builds
//! and imports, checkouts, object copies, static deltas): at most `jobs`
//! threads, results in input order, and no new item started once one has
//! failed. Work that needs a process of its own (delta generation, object
//! copies) spawns and awaits it from the item's thread.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Result;

/// Runs `f` on every item, at most `jobs` at a time (at least one), and returns
/// the results in the order of `items`.
///
/// After a failure no further item is started; the items already running
/// finish, and the error returned is the first in input order, whichever
/// finished first. Items are handed out in order, so that is also the first
/// error a sequential loop would have met.
pub fn map_bounded<T, R, F>(items: &[T], jobs: usize, f: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> Result<R> + Sync,
{
    map_bounded_with(items, jobs, || Ok(()), |(), item| f(item))
}

/// [`map_bounded`] with state of each worker thread (e.g. a library handle
/// that must not be shared between threads): `init` makes it when the worker
/// takes its first item, so a worker that gets none makes none. A failed
/// `init` is the failure of that item.
pub fn map_bounded_with<T, S, R, I, F>(items: &[T], jobs: usize, init: I, f: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    I: Fn() -> Result<S> + Sync,
    F: Fn(&mut S, &T) -> Result<R> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<R>)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                let mut state = None;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = match &mut state {
                        Some(state) => f(state, item),
                        None => init().and_then(|made| f(state.insert(made), item)),
                    };
                    failed.fetch_or(r.is_err(), Ordering::SeqCst);
                    results.lock().expect("results lock").push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_input_order_for_any_job_count() {
        let items: Vec<u64> = (0..50).collect();
        for jobs in [0, 1, 3, 50, 200] {
            let got = map_bounded(&items, jobs, |&n| {
                // Later items finish first, so order comes from the map, not the clock.
                std::thread::sleep(std::time::Duration::from_micros(50 - n));
                Ok(n * 2)
            })
            .unwrap();
            assert_eq!(got, items.iter().map(|n| n * 2).collect::<Vec<_>>(), "jobs={jobs}");
        }
        assert!(map_bounded(&[] as &[u8], 4, |_| Ok(())).unwrap().is_empty());
    }

    #[test]
    fn first_error_in_input_order_stops_new_items() {
        let started = AtomicUsize::new(0);
        let items: Vec<usize> = (0..20).collect();
        let e = map_bounded(&items, 1, |&n| {
            started.fetch_add(1, Ordering::SeqCst);
            if n >= 5 {
                anyhow::bail!("item {n} failed")
            } else {
                Ok(n)
            }
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "item 5 failed");
        assert_eq!(started.load(Ordering::SeqCst), 6);

        // With several jobs, a later item failing first still reports the earlier one.
        let e = map_bounded(&items, 4, |&n| match n {
            1 => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                anyhow::bail!("item 1 failed")
            }
            2 => anyhow::bail!("item 2 failed"),
            _ => Ok(n),
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "item 1 failed");
    }

    #[test]
    fn each_worker_makes_its_state_once_and_a_failed_init_fails_its_item() {
        let made = AtomicUsize::new(0);
        let items: Vec<usize> = (0..30).collect();
        let got = map_bounded_with(
            &items,
            3,
            || Ok(made.fetch_add(1, Ordering::SeqCst)),
            |_worker, &n| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                Ok(n)
            },
        )
        .unwrap();
        assert_eq!(got, items);
        assert!((1..=3).contains(&made.load(Ordering::SeqCst)), "{made:?}");

        // One item, many jobs: one worker takes it, one state is made.
        made.store(0, Ordering::SeqCst);
        map_bounded_with(&[1], 8, || Ok(made.fetch_add(1, Ordering::SeqCst)), |_, &n| Ok(n)).unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 1);

        let e = map_bounded_with(
            &items,
            2,
            || -> Result<()> { anyhow::bail!("no handle") },
            |_, &n| Ok(n),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "no handle");
    }
}

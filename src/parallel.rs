//! One bounded parallel map for independent jobs (downloads, package builds):
//! at most `jobs` threads, results in input order, and no new item started
//! once one has failed.

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
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<R>)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = f(item);
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
}

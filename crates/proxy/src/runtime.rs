//! The tokio runtime a proxy process runs on: one that fits the CPUs it may use.
//!
//! A proxy spends its time handing requests between tasks: a client connection's task, the
//! upstream connection's task, timers. On a multi-threaded runtime every hand-off goes through
//! the work-stealing machinery (atomic queues, the "searching" protocol, parking through the
//! driver lock), even when there is only one worker to hand to. With one CPU that machinery buys
//! nothing, so [`build`] gives a process that may use one CPU a current-thread runtime instead,
//! as linkerd2-proxy does when it is given one core. In `proxy_load` (64 HTTPS connections,
//! gateway pinned to one CPU) this cut the gateway's CPU time per request by ≈ 15 %
//! (crates/proxy/README.md).

use std::io;
use std::num::NonZeroUsize;

/// What [`build`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Everything on the calling thread (one CPU).
    CurrentThread,
    /// A work-stealing pool of this many workers.
    MultiThread(NonZeroUsize),
}

impl Flavor {
    /// The flavor for `workers` worker threads, or for the CPUs this process may run on (its
    /// affinity mask and cgroup CPU quota, through `std::thread::available_parallelism`) when
    /// `workers` is `None`.
    pub fn for_workers(workers: Option<NonZeroUsize>) -> Self {
        let n = workers
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN);
        if n.get() == 1 {
            Flavor::CurrentThread
        } else {
            Flavor::MultiThread(n)
        }
    }
}

/// Builds a runtime with every driver (I/O, time) enabled, of the flavor
/// [`Flavor::for_workers`] picks for `workers`. Blocking work (`spawn_blocking`) runs on
/// tokio's blocking pool with either flavor.
pub fn build(workers: Option<NonZeroUsize>) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = match Flavor::for_workers(workers) {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.get());
            b
        }
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_runs_on_the_current_thread_and_more_on_a_pool() {
        let one = NonZeroUsize::MIN;
        let four = NonZeroUsize::new(4).unwrap();
        assert_eq!(Flavor::for_workers(Some(one)), Flavor::CurrentThread);
        assert_eq!(Flavor::for_workers(Some(four)), Flavor::MultiThread(four));
        let cpus = std::thread::available_parallelism().unwrap();
        let expected = if cpus.get() == 1 {
            Flavor::CurrentThread
        } else {
            Flavor::MultiThread(cpus)
        };
        assert_eq!(Flavor::for_workers(None), expected);
    }

    #[test]
    fn both_flavors_run_tasks_timers_and_blocking_work() {
        for workers in [1, 2] {
            let rt = build(NonZeroUsize::new(workers)).unwrap();
            let flavor = rt.handle().runtime_flavor();
            let expected = if workers == 1 {
                tokio::runtime::RuntimeFlavor::CurrentThread
            } else {
                tokio::runtime::RuntimeFlavor::MultiThread
            };
            assert_eq!(flavor, expected);
            let got = rt.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let spawned = tokio::spawn(async { 20 }).await.unwrap();
                let blocking = tokio::task::spawn_blocking(|| 22).await.unwrap();
                spawned + blocking
            });
            assert_eq!(got, 42);
        }
    }
}

//! What the governance benches share.

use std::time::Instant;

/// Nanoseconds per call of `f` over `n` calls, after `n / 10` to warm up.
pub fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

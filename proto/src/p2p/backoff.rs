//! Redial delays for the client: exponential from `initial` to `max`, with up to 25 % of random
//! extra so that many nodes that lost the coordinator at once do not redial in lockstep.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng_state: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            initial,
            max,
            current: initial,
            rng_state: seed | 1,
        }
    }

    /// The next delay; each call doubles the base up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = base.mul_f64(0.25 * self.unit_random());
        (base + jitter).min(self.max.max(base))
    }

    /// Back to `initial`, after a connection proved healthy.
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }

    /// xorshift64*: a few bits of jitter, no need for a crypto RNG.
    fn unit_random(&mut self) -> f64 {
        let mut x = self.rng_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng_state = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), 42);
        let first = b.next_delay();
        assert!(first >= ms(100) && first <= ms(125), "{first:?}");
        let second = b.next_delay();
        assert!(second >= ms(200) && second <= ms(250), "{second:?}");
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= ms(1000), "{d:?}");
        }
        assert!(b.next_delay() >= ms(1000));
        b.reset();
        assert!(b.next_delay() <= ms(125));
    }
}

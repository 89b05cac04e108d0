//! Simulator source: the fleet simulator ([`crate::sim::Fleet`]) scraped on the agent's
//! clock, for `immune demo`.
//!
//! Rounds fall on the simulator's own grid (`start`, `start + scrape_interval`, ...), each
//! taken once the agent's clock has reached it; a clock running faster than real time
//! (the demo's [`crate::serve::ScaledClock`]) makes the fleet run just as fast, and the
//! engine, ticked on the same clock, cannot tell.

use super::SourceContext;
use crate::sim::Fleet;

/// Feeds `fleet`'s scrapes to the engine until shutdown.
pub async fn run(mut ctx: SourceContext, mut fleet: Fleet) {
    ctx.metrics.touch(&ctx.name);
    let every = fleet.config().scrape_interval;
    let mut next = fleet.config().start;
    loop {
        if *ctx.shutdown.borrow() {
            return;
        }
        let now = ctx.clock.now();
        if now < next {
            let wait = ctx.clock.real(next.since(now));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = ctx.shutdown.changed() => return,
            }
            continue;
        }
        let started = std::time::Instant::now();
        let mut batch = Vec::new();
        fleet.scrape(next, &mut batch);
        ctx.metrics.observe(&ctx.name, started.elapsed());
        ctx.metrics.success(&ctx.name, next, batch.len());
        if !ctx.offer(batch) {
            return;
        }
        next = next.add(every);
    }
}

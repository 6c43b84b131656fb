//! The queueing model of `latency.rs` against a discrete-event simulation of the same queue:
//! c FIFO servers, Poisson arrivals, gamma service times, over a grid of servers, loads and
//! service-time spreads, and mixtures of fast and slow models on one node.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma};
use stowage_planner::latency::{Queue, Stream};

/// Draws one service time.
type Draw = Box<dyn Fn(&mut ChaCha8Rng) -> f64>;

/// Simulated P50 and P90 response times (ms) of `streams` on `servers` FIFO servers.
fn simulate(servers: usize, streams: &[Stream], requests: usize, seed: u64) -> (f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rate: f64 = streams.iter().map(|s| s.rate).sum();
    let gap = Exp::new(rate / 1000.0).unwrap();
    let service: Vec<Draw> = streams
        .iter()
        .map(|s| -> Draw {
            if s.scv == 0.0 {
                let m = s.mean_ms;
                Box::new(move |_| m)
            } else {
                let g = Gamma::new(1.0 / s.scv, s.mean_ms * s.scv).unwrap();
                Box::new(move |r| g.sample(r))
            }
        })
        .collect();
    let mut free = vec![0.0f64; servers];
    let mut now = 0.0;
    let mut times = Vec::with_capacity(requests);
    for n in 0..requests + requests / 10 {
        now += gap.sample(&mut rng);
        // Which model: by its share of the traffic.
        let mut pick = rng.random::<f64>() * rate;
        let mut i = 0;
        while i + 1 < streams.len() && pick > streams[i].rate {
            pick -= streams[i].rate;
            i += 1;
        }
        let (k, at) = free.iter().enumerate().fold((0, f64::MAX), |b, (k, &f)| if f < b.1 { (k, f) } else { b });
        let start = at.max(now);
        let done = start + service[i](&mut rng);
        free[k] = done;
        if n >= requests / 10 {
            times.push(done - now);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 9 / 10])
}

#[test]
fn the_model_agrees_with_a_simulation_over_servers_loads_and_spreads() {
    let mut worst: (f64, String) = (0.0, String::new());
    let mut rows = Vec::new();
    for servers in [1usize, 2, 4] {
        for utilization in [0.3, 0.6, 0.8, 0.9] {
            for scv in [0.0, 0.25, 1.0, 2.0] {
                let mean = 10.0;
                let s = Stream { rate: utilization * servers as f64 * 1000.0 / mean, mean_ms: mean, scv };
                let model = Queue::new(servers as f64, &[s]).percentiles();
                let (p50, p90) = simulate(servers, &[s], 300_000, 7);
                let err = (model.p90_ms - p90).abs() / p90;
                rows.push(format!(
                    "c={servers} ρ={utilization} scv={scv}: P90 model {:.1} sim {p90:.1} ({:+.0}%), P50 model {:.1} sim {p50:.1}",
                    model.p90_ms,
                    100.0 * (model.p90_ms / p90 - 1.0),
                    model.p50_ms
                ));
                if err > worst.0 {
                    worst = (err, rows.last().unwrap().clone());
                }
            }
        }
    }
    println!("{}", rows.join("\n"));
    assert!(worst.0 < 0.10, "P90 within 10 % of the simulation everywhere; worst: {}", worst.1);
}

#[test]
fn mixtures_of_fast_and_slow_models_agree_with_a_simulation() {
    // A node of many quick models and a few slow ones, as packed nodes are.
    let mix = [
        Stream { rate: 40.0, mean_ms: 4.0, scv: 0.3 },
        Stream { rate: 20.0, mean_ms: 6.0, scv: 0.3 },
        Stream { rate: 4.0, mean_ms: 40.0, scv: 0.2 },
    ];
    for servers in [1usize, 2] {
        let scale = servers as f64;
        let streams: Vec<Stream> = mix.iter().map(|s| Stream { rate: s.rate * scale, ..*s }).collect();
        let q = Queue::new(servers as f64, &streams);
        let (_, p90) = simulate(servers, &streams, 300_000, 11);
        let model = q.percentiles().p90_ms;
        assert!(
            (model - p90).abs() / p90 < 0.10,
            "c={servers} ρ={:.2}: model {model:.1} sim {p90:.1}",
            q.utilization()
        );
    }
}

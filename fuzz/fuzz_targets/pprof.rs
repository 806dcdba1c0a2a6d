//! pprof profiles as a target (or `PUT /api/v1/baselines`) serves them:
//! decoded, then analysed the way evidence is (top table, flame graph's
//! folded stacks).
#![no_main]
use libfuzzer_sys::fuzz_target;
use quench_connectors::pprof::{self, flame, top};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = pprof::decode(data) else { return };
    let _ = pprof::Family::of(&p);
    let index = top::default_index(&p);
    if let Ok(t) = top::top(&p, index) {
        let _ = top::render(&t, &p, 20);
        let _ = flame::diff(&t, &t);
    }
    let _ = flame::folded(&p, index);
});

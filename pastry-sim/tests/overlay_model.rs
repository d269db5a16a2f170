//! A state-machine property test of the overlay against a reference model: proptest generates
//! schedules of joins, silent failures, graceful leaves, revivals, loss and lookups from a model
//! of which nodes run, applies them to the test network, and checks after every step that no
//! lookup was delivered anywhere but at the oracle's closest live, active node; at the end, after
//! a quiet period, every lookup must be delivered there. A failing schedule shrinks to a minimal
//! one. (The rules are those of `pastry_sim::fuzzing::Runner`, shared with the `overlay` fuzz
//! target.)

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

use pastry_sim::fuzzing::{MAX_NODES, Op, Runner};

/// What the model tracks: how many nodes were spawned and how many of them run.
#[derive(Clone, Debug)]
struct Model {
    seed: u64,
    initial: u8,
    spawned: usize,
    running: usize,
    gone: usize,
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        (any::<u64>(), 0u8..6)
            .prop_map(|(seed, initial)| Model {
                seed,
                initial,
                spawned: usize::from(initial) + 1,
                running: usize::from(initial) + 1,
                gone: 0,
            })
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let mut ops: Vec<BoxedStrategy<Op>> = vec![
            Just(Op::Advance(2_000)).boxed(),
            (any::<u8>(), any::<u128>())
                .prop_map(|(i, k)| Op::Lookup(i, k))
                .boxed(),
            (0u8..=10).prop_map(Op::Loss).boxed(),
            (100u16..10_000).prop_map(Op::Advance).boxed(),
        ];
        if state.spawned < MAX_NODES {
            ops.push(Just(Op::Join).boxed());
        }
        if state.running > 1 {
            ops.push(any::<u8>().prop_map(Op::Kill).boxed());
            ops.push(any::<u8>().prop_map(Op::Leave).boxed());
        }
        if state.gone > 0 {
            ops.push(any::<u8>().prop_map(Op::Revive).boxed());
        }
        proptest::strategy::Union::new(ops).boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        match op {
            Op::Join => {
                state.spawned += 1;
                state.running += 1;
            }
            Op::Kill(_) | Op::Leave(_) => {
                state.running = state.running.saturating_sub(1);
                state.gone += 1;
            }
            Op::Revive(_) => {
                state.gone = state.gone.saturating_sub(1);
                state.running += 1;
            }
            _ => {}
        }
        state
    }
}

struct Overlay;

impl StateMachineTest for Overlay {
    type SystemUnderTest = Runner;
    type Reference = Reference;

    fn init_test(model: &Model) -> Runner {
        Runner::new(model.seed, model.initial).expect("the initial ring forms")
    }

    fn apply(mut runner: Runner, _model: &Model, op: Op) -> Runner {
        if let Err(e) = runner.apply(&op) {
            panic!("{e}");
        }
        runner
    }

    fn teardown(runner: Runner, _model: Model) {
        if let Err(e) = runner.finish() {
            panic!("{e}");
        }
    }
}

fn config() -> Config {
    let mut c = Config::with_cases(256);
    if let RngSeed::Random = c.rng_seed {
        c.rng_seed = RngSeed::Fixed(0x006f_7665_726c_6179);
    }
    c.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/overlay_model.proptest-regressions"
    ))));
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        println!(
            "proptest seed: {:?} (set PROPTEST_RNG_SEED to change)",
            c.rng_seed
        )
    });
    c
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn overlay_matches_the_oracle_under_churn(sequential 1..64 => Overlay);
}

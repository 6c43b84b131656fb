//! ONNX Runtime through the `ort` crate, loaded at run time from the `libonnxruntime` shared
//! library (the PyPI `onnxruntime` wheel ships it; `scripts/ort-lib.sh` installs it and prints the
//! path). Nothing is downloaded at build time.
//!
//! An ort 2.x `Session` runs with `&mut self`, so each model holds its session behind a mutex:
//! one inference at a time per model, with parallelism across models. Every session shares one
//! intra-op thread pool, made with the environment (`init`): a lone request spreads over the idle
//! cores, and under load the pool's threads are shared, never multiplied by the sessions. Its
//! threads do not spin while they wait (that would take the cores the other requests need).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use super::{check_output, EngineError, EngineOptions, Inputs, Model, Output, Signature};
use stowage_core::Engine as EngineKind;

static ENV: OnceLock<Result<ort::environment::Environment, EngineError>> = OnceLock::new();

/// Where to find the library: the flag, else `ORT_DYLIB_PATH`.
pub fn library_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
}

/// Loads the ONNX Runtime library once per process, with the intra-op thread pool every session
/// shares (`intra_threads`; 1: each inference on its caller's thread). Later calls return the
/// first outcome.
pub fn init(library: Option<&Path>, intra_threads: usize) -> Result<(), EngineError> {
    let r = ENV.get_or_init(|| {
        let unavailable = EngineError::Unavailable;
        let path = library_path(library).ok_or_else(|| {
            unavailable(
                "no ONNX Runtime library: pass --ort-library or set ORT_DYLIB_PATH (scripts/ort-lib.sh prints it)"
                    .into(),
            )
        })?;
        if !path.is_file() {
            return Err(unavailable(format!("ONNX Runtime library {} does not exist", path.display())));
        }
        let builder = ort::init_from(&path).map_err(|e| unavailable(format!("cannot load {}: {e}", path.display())))?;
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(intra_threads.max(1))
            .and_then(|p| p.with_inter_threads(1))
            .and_then(|p| p.with_spin_control(false))
            .and_then(|p| p.with_thread_manager(Helpers))
            .map_err(|e| unavailable(format!("cannot set up ONNX Runtime's thread pool: {e}")))?;
        builder
            .with_name("stowage")
            .with_global_thread_pool(pool)
            .build()
            .map_err(|e| unavailable(format!("cannot start ONNX Runtime: {e}")))
    });
    r.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Starts the threads of ONNX Runtime's pool as helpers that run only on a core nobody else
/// wants (`SCHED_IDLE`): the thread that runs an inference always works on it itself, and a pool
/// thread takes a share of it only where a core would otherwise idle. So a lone request spreads
/// over the idle cores, and under load, when every core runs a request, the pool's threads add
/// no work to switch between (no oversubscription). Where the scheduler refuses, the thread runs
/// at the lowest ordinary priority instead.
struct Helpers;

impl ort::environment::ThreadManager for Helpers {
    type Thread = std::thread::JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<Self::Thread> {
        std::thread::Builder::new()
            .name("stowage-ort".into())
            .spawn(move || {
                idle_priority();
                work();
            })
            .map_err(|e| ort::Error::new(format!("cannot start an ONNX Runtime thread: {e}")))
    }

    fn join(thread: Self::Thread) -> ort::Result<()> {
        thread.join().map_err(|_| ort::Error::new("an ONNX Runtime thread panicked"))
    }
}

/// This thread runs only when a core would otherwise idle (`SCHED_IDLE`), else at nice 19.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler and setpriority change the calling thread's (0: this thread)
    // scheduling and read only the struct passed by pointer.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

/// Whether ONNX Runtime was loaded (by `init`), or why not.
pub fn available() -> Result<(), EngineError> {
    env().map(|_| ())
}

fn env() -> Result<&'static ort::environment::Environment, EngineError> {
    match ENV.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(e.clone()),
        None => Err(EngineError::Unavailable("ONNX Runtime was not initialized (ort::init)".into())),
    }
}

pub struct OrtModel {
    session: Mutex<Session>,
    sig: Signature,
}

impl OrtModel {
    pub fn load(bytes: &[u8], sig: &Signature, opts: &EngineOptions) -> Result<Self, EngineError> {
        let env = env()?;
        // Builder errors are not Send/Sync: turn them into strings at once.
        let load = |e: String| EngineError::Load(e);
        let mut builder = Session::builder(env).map_err(|e| load(e.to_string()))?;
        if let Some(device) = opts.ort_cuda_device {
            let cuda = ort::ep::CUDA::default().with_device_id(device).build().error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| load(format!("CUDA execution provider on device {device} is not available: {e}")))?;
        }
        let session = builder
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.to_string()))?
            .commit_from_memory(bytes)
            .map_err(|e| load(e.to_string()))?;
        Ok(Self { session: Mutex::new(session), sig: sig.clone() })
    }
}

impl Model for OrtModel {
    fn backend(&self) -> EngineKind {
        EngineKind::Ort
    }

    fn concurrency_limit(&self) -> Option<usize> {
        Some(1)
    }

    fn predict(&self, x: &Inputs) -> Result<Output, EngineError> {
        let run = |e: ort::Error| EngineError::Run(e.to_string());
        let shape = [x.batch as i64, x.seq as i64];
        let mut feed = Vec::with_capacity(self.sig.inputs.len());
        for name in &self.sig.inputs {
            let data = match name.as_str() {
                "input_ids" => &x.input_ids,
                "attention_mask" => &x.attention_mask,
                _ => &x.token_type_ids,
            };
            let t = Tensor::from_array((shape, data.clone())).map_err(run)?;
            feed.push((std::borrow::Cow::<str>::from(name.clone()), ort::session::SessionInputValue::from(t)));
        }
        let mut session = self.session.lock().map_err(|_| EngineError::Run("session lock poisoned".into()))?;
        let outputs = session.run(feed).map_err(run)?;
        let value = outputs
            .get(self.sig.output.as_str())
            .ok_or_else(|| EngineError::Run(format!("no output {:?}", self.sig.output)))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(run)?;
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        check_output(&self.sig, x, &shape, data.len())?;
        Ok(Output { shape, data: data.to_vec() })
    }
}

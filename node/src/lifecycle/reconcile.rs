//! A live node: when its plan or catalog changes (a file watch, SIGHUP, or `POST /admin/reload`),
//! the node reads both again and moves from the model set it serves to the new one without a
//! restart. Kept models serve on untouched (same engine instance, no reload); removed models
//! stop admitting at once (404 `unknown_model`), finish what they hold and are dropped, their
//! memory returned and their series gone from `/metrics`; added models load in the background
//! and answer 503 `not_ready` until warm; a model whose spec changed (a new artifact or sha256)
//! loads beside the old one, which serves until the new one is warm and swapped in.
//!
//! Memory: removed models are unloaded before anything new loads, and new models load at most
//! `--load-parallelism` at once, so the node never holds more than its old set plus the models
//! loading at that moment. A change that cannot be read or does not agree with itself (a catalog
//! replaced while the plan is not yet, a plan without this node) changes nothing: one log line
//! names the reason, the node serves on, and the next change is tried again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use stowage_core::PlanNode;
use tracing::{debug, error, info, warn};

use crate::lifecycle::cold::ColdPool;
use crate::lifecycle::diff::diff;
use crate::lifecycle::registry::{Entry, Registry, State};
use crate::lifecycle::spec::{NodeSet, SpecSource};
use crate::lifecycle::startup::Loader;
use crate::metrics;
use crate::process::release_freed_memory;

/// What the node runs now: `GET /admin/plan`.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub plan: Option<String>,
    pub catalog: Option<String>,
    pub plan_sha256: Option<String>,
    pub catalog_sha256: String,
    /// The plan's entry for this node (id, instance type, models, usage).
    pub node: Option<PlanNode>,
    /// The model ids the node serves, in plan order.
    pub models: Vec<String>,
    /// When this set was applied (Unix seconds): the start, or the last reload that changed it.
    pub applied_at: f64,
}

/// How a reload ended, in one word: the `result` of `POST /admin/reload` and of
/// `stowage_reloads_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The node moved to the set the files name.
    #[default]
    Applied,
    /// The plan and catalog are the ones the node runs: nothing to do.
    Unchanged,
    /// The files cannot be served (unreadable, inconsistent, no such node): nothing changed.
    Refused,
}

impl ReloadResult {
    pub fn name(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Refused => "refused",
        }
    }
}

/// How a reload ended: `POST /admin/reload` answers it, and the log has it in one line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub result: ReloadResult,
    /// Why a reload was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Models whose spec changed, loaded anew and swapped in.
    pub replaced: Vec<String>,
    /// Added or replaced models that failed to load (an added one answers 503 `model_failed`; a
    /// replaced one keeps serving its old version).
    pub failed: Vec<String>,
    pub kept: usize,
    pub seconds: f64,
}

impl Outcome {
    fn refused(reason: String) -> Self {
        Self { result: ReloadResult::Refused, reason: Some(reason), ..Self::default() }
    }
}

/// The node's side of a change of plan.
pub struct Reconciler {
    registry: Arc<Registry>,
    loader: Arc<Loader>,
    /// The node's cold pool: a plan that changes its size resizes it.
    cold: Arc<ColdPool>,
    source: SpecSource,
    /// Longest a removed or replaced model may take to finish what it holds.
    drain: Duration,
    applied: Mutex<Applied>,
    /// One reload (or the start-up) at a time.
    busy: tokio::sync::Mutex<()>,
    /// The last refusal's reason: the same one again is logged at debug level only.
    refused: Mutex<Option<String>>,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Reconciler {
    /// For a node whose registry was made from `initial` (read from `source`).
    pub fn new(
        registry: Arc<Registry>,
        loader: Arc<Loader>,
        cold: Arc<ColdPool>,
        source: SpecSource,
        initial: &NodeSet,
        drain: Duration,
    ) -> Arc<Self> {
        let applied = Mutex::new(Self::describe(&source, initial));
        publish_plan(None, initial);
        Arc::new(Self {
            registry,
            loader,
            cold,
            source,
            drain,
            applied,
            busy: Default::default(),
            refused: Mutex::new(None),
        })
    }

    fn describe(source: &SpecSource, set: &NodeSet) -> Applied {
        Applied {
            plan: source.plan.as_ref().map(|p| p.display().to_string()),
            catalog: source.catalog_path().map(|p| p.display().to_string()),
            plan_sha256: set.plan_sha256.clone(),
            catalog_sha256: set.catalog_sha256.clone(),
            node: set.node.clone(),
            models: set.specs.iter().map(|s| s.id.clone()).collect(),
            applied_at: now(),
        }
    }

    pub fn source(&self) -> &SpecSource {
        &self.source
    }

    pub fn applied(&self) -> Applied {
        self.applied.lock().map(|a| a.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Loads the start-up set; reloads wait until it is done.
    pub async fn start(&self) {
        let _one = self.busy.lock().await;
        crate::lifecycle::startup::start_up(self.registry.clone(), self.loader.clone()).await;
    }

    /// Reloads whenever `trigger` fires (file changes, SIGHUP), a short pause after the first
    /// event so that a plan and catalog written together are read together.
    pub async fn run(self: Arc<Self>, trigger: Arc<tokio::sync::Notify>, settle: Duration) {
        loop {
            trigger.notified().await;
            tokio::time::sleep(settle).await;
            self.reload("change").await;
        }
    }

    /// Reads the plan and catalog again and moves the node to the set they name.
    pub async fn reload(&self, trigger: &str) -> Outcome {
        let _one = self.busy.lock().await;
        let start = Instant::now();
        if self.registry.shutting_down() {
            return self.refuse(trigger, "the node is shutting down".into());
        }
        let next = match self.source.read() {
            Ok(n) => n,
            Err(e) => return self.refuse(trigger, e.to_string()),
        };
        let before = self.applied();
        if before.plan_sha256 == next.plan_sha256 && before.catalog_sha256 == next.catalog_sha256 {
            metrics::reload_result(ReloadResult::Unchanged.name());
            debug!(trigger, "reload: plan and catalog unchanged");
            return Outcome { result: ReloadResult::Unchanged, kept: self.registry.len(), ..Outcome::default() };
        }
        if let Ok(mut r) = self.refused.lock() {
            *r = None;
        }
        let change = diff(&self.registry.specs(), &next.specs);
        let mut out = Outcome { kept: change.kept.len(), ..Outcome::default() };
        // Unload first: what leaves stops admitting now and is dropped before anything new loads.
        let leaving: Vec<Arc<Entry>> = change.removed.iter().filter_map(|id| self.registry.remove(id)).collect();
        out.removed = leaving.iter().map(|e| e.spec.id.clone()).collect();
        self.registry.publish_counts();
        self.retire(leaving).await;
        // A smaller cold pool gives its room back before anything new loads; a larger one takes
        // it once the new models are in (so the node never holds both the old and new sizes).
        if self.cold.shrink_to(next.cold_pool_mib) {
            release_freed_memory();
        }

        let added: Vec<Arc<Entry>> = change.added.into_iter().map(|s| self.registry.stage(s)).collect();
        for e in &added {
            metrics::revive("model", &e.spec.id);
            self.registry.add(e.clone());
        }
        out.added = added.iter().map(|e| e.spec.id.clone()).collect();
        let staged: Vec<Arc<Entry>> = change.replaced.into_iter().map(|s| self.registry.stage(s)).collect();
        out.replaced = staged.iter().map(|e| e.spec.id.clone()).collect();
        self.registry.reorder(&next.specs.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
        if !(added.is_empty() && staged.is_empty()) {
            info!(
                added = added.len(),
                replaced = staged.len(),
                removed = out.removed.len(),
                kept = out.kept,
                "reload: loading the new models"
            );
        }
        let all: Vec<Arc<Entry>> = added.iter().chain(&staged).cloned().collect();
        let brought = self.loader.bring_up(all, &self.registry).await;
        let ok: HashSet<&str> = brought.iter().filter(|b| b.ok).map(|b| b.id.as_str()).collect();
        out.failed = brought.iter().filter(|b| !b.ok).map(|b| b.id.clone()).collect();
        let mut replaced_old = Vec::new();
        for e in staged {
            if ok.contains(e.spec.id.as_str()) {
                if let Some(old) = self.registry.swap(e) {
                    replaced_old.push(old);
                }
            } else {
                warn!(model = %e.spec.id, "reload: the new version failed to load; the old one serves on");
            }
        }
        self.registry.publish_counts();
        self.drain_all(replaced_old).await;
        release_freed_memory();
        self.cold.grow_to(next.cold_pool_mib);

        publish_plan(Some(&before), &next);
        if let Ok(mut a) = self.applied.lock() {
            *a = Self::describe(&self.source, &next);
        }
        out.seconds = start.elapsed().as_secs_f64();
        metrics::reload_result(ReloadResult::Applied.name());
        info!(
            trigger,
            added = out.added.len(),
            removed = out.removed.len(),
            replaced = out.replaced.len(),
            failed = out.failed.len(),
            kept = out.kept,
            seconds = format!("{:.2}", out.seconds),
            plan_sha256 = next.plan_sha256.as_deref().unwrap_or("-"),
            "reload applied"
        );
        out
    }

    /// Logs a refused change once per reason (again only at debug level) and counts it.
    fn refuse(&self, trigger: &str, reason: String) -> Outcome {
        metrics::reload_result(ReloadResult::Refused.name());
        let repeated = self.refused.lock().map(|mut r| r.replace(reason.clone()).as_ref() == Some(&reason));
        if repeated.unwrap_or(false) {
            debug!(trigger, %reason, "reload refused again; serving the models already loaded");
        } else {
            warn!(trigger, %reason, "reload refused; serving the models already loaded until the files agree");
        }
        Outcome::refused(reason)
    }

    /// Waits for removed models to finish, then drops them and their series.
    async fn retire(&self, leaving: Vec<Arc<Entry>>) {
        let ids: Vec<String> = leaving.iter().map(|e| e.spec.id.clone()).collect();
        self.drain_all(leaving).await;
        for id in ids {
            metrics::retire("model", &id);
        }
        release_freed_memory();
    }

    /// Waits until no request holds each entry (every request it admitted is answered), at most
    /// `drain` in all, then lets them go.
    async fn drain_all(&self, entries: Vec<Arc<Entry>>) {
        let deadline = tokio::time::Instant::now() + self.drain;
        for e in entries {
            if !e.idle_by(deadline).await {
                warn!(model = %e.spec.id, holders = e.holders(), "reload: requests still hold the old model after the drain time; it goes when they finish");
            }
            e.set_state(State::Failed("removed".into()));
        }
    }
}

/// `stowage_plan_info` for the set now served; the series of the set before leaves `/metrics`.
fn publish_plan(before: Option<&Applied>, next: &NodeSet) {
    let plan = next.plan_sha256.clone().unwrap_or_else(|| "none".into());
    if let Some(b) = before {
        let old = b.plan_sha256.clone().unwrap_or_else(|| "none".into());
        if old != plan {
            metrics::retire("plan_sha256", &old);
        }
    }
    metrics::revive("plan_sha256", &plan);
    ::metrics::gauge!(metrics::PLAN_INFO, "plan_sha256" => plan, "catalog_sha256" => next.catalog_sha256.clone())
        .set(1.0);
}

/// Watches the directories of `files` (not the files: the kubelet updates a mounted ConfigMap by
/// swapping a symbolic link, and editors and `mv` replace files) and fires `trigger` when an entry
/// of one of those names, or the kubelet's `..data` link, changes. The watch lasts as long as the
/// returned watcher.
pub fn watch(
    files: &[std::path::PathBuf],
    trigger: Arc<tokio::sync::Notify>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let names: HashSet<std::ffi::OsString> = files.iter().filter_map(|f| f.file_name().map(|n| n.to_owned())).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(e) if !matches!(e.kind, EventKind::Access(_)) => {
            let relevant = e
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n) || n.to_string_lossy().starts_with("..")));
            if relevant {
                trigger.notify_one();
            }
        }
        Ok(_) => {}
        Err(e) => error!(error = %e, "watching the plan and catalog failed"),
    })?;
    let mut dirs: Vec<std::path::PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

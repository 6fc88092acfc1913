//! Running one guest call inside its limits: a fresh store, a memory cap,
//! an epoch-driven yield, a wall-clock timeout and a global bound on calls
//! in flight. Whatever happens, the caller gets the call's state back
//! (effects to commit, or to discard) and a classified error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt as _;
use wasmtime::Store;

use super::bindings::{
    Arg, CommandError, Firing, Invocation, Plugin, PluginInfo, PluginPre, WebhookRequest,
};
use super::plugin::LoadedPlugin;
use super::state::{CallState, Grants, Phase};
use super::{PluginError, Runtime};

/// What a call left behind: its result and the effects it buffered.
#[derive(Debug)]
pub struct CallOutcome<T> {
    /// What the guest returned, or why it did not return.
    pub result: Result<T, PluginError>,
    /// The effects it buffered; commit them only on success.
    pub state: CallState,
}

impl Runtime {
    fn store(&self, name: Arc<str>, grants: Arc<Grants>, phase: Phase) -> Store<CallState> {
        let state = CallState::new(name, grants, phase, &self.services, self.memory_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// Runs `call` against a fresh store under every limit.
    async fn guarded<T, F>(&self, mut store: Store<CallState>, call: F) -> CallOutcome<T>
    where
        F: for<'s> FnOnce(
            &'s mut Store<CallState>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = wasmtime::Result<T>> + Send + 's>,
        >,
    {
        let Ok(_permit) = self.calls.clone().try_acquire_owned() else {
            return CallOutcome {
                result: Err(PluginError::Busy),
                state: store.into_data(),
            };
        };
        let _awake = self.ticker.awake();
        // A panic in a host function (a host bug some input reached) ends
        // this call as a crash, never the process: the backstop behind
        // checking input before the work.
        let guarded = AssertUnwindSafe(call(&mut store)).catch_unwind();
        let result = match tokio::time::timeout(self.timeout, guarded).await {
            Err(_) => Err(PluginError::Timeout(self.timeout)),
            Ok(Err(panic)) => {
                let what = panic_text(&panic);
                tracing::error!(plugin = %store.data().plugin, "a host function panicked: {what}");
                Err(PluginError::Trap {
                    cause: "a host function failed".into(),
                    detail: format!("host panic: {what}"),
                })
            }
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) if e.chain().any(crate::store::is_unavailable) => {
                Err(PluginError::Unavailable(format!("{e:#}")))
            }
            // Every pooled instance slot in use: load, not the plugin's fault.
            Ok(Ok(Err(e)))
                if e.chain().any(|c| {
                    c.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some()
                }) =>
            {
                Err(PluginError::Busy)
            }
            Ok(Ok(Err(e))) if store.data().limits.hit_memory_limit => {
                Err(PluginError::OutOfMemory {
                    limit_mb: self.memory_bytes >> 20,
                    detail: format!("{e:#}"),
                })
            }
            Ok(Ok(Err(e))) => Err(PluginError::Trap {
                cause: e.root_cause().to_string(),
                detail: format!("{e:#}"),
            }),
        };
        CallOutcome {
            result,
            state: store.into_data(),
        }
    }

    /// Calls `describe()` with only `log` available.
    pub(super) async fn describe(
        &self,
        pre: &PluginPre<CallState>,
        name: Arc<str>,
        grants: Arc<Grants>,
    ) -> Result<PluginInfo, PluginError> {
        let store = self.store(name, grants, Phase::Describe);
        let pre = pre.clone();
        self.guarded(store, move |store| {
            Box::pin(async move {
                let plugin = pre.instantiate_async(&mut *store).await?;
                plugin.ikkyu_plugin_guest().call_describe(&mut *store).await
            })
        })
        .await
        .result
    }

    /// Instantiates `plugin` in a fresh store for `phase` and runs `call`
    /// on the instance, under every limit: the one path all three exports
    /// take.
    async fn instantiated<T, F>(
        &self,
        plugin: &LoadedPlugin,
        phase: Phase,
        call: F,
    ) -> CallOutcome<T>
    where
        T: Send + 'static,
        F: for<'s> FnOnce(
                &'s mut Store<CallState>,
                Plugin,
            )
                -> Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 's>>
            + Send
            + 'static,
    {
        let store = self.store(plugin.name.clone(), plugin.grants.clone(), phase);
        let pre = plugin.pre.clone();
        self.guarded(store, move |store| {
            Box::pin(async move {
                let instance = pre.instantiate_async(&mut *store).await?;
                call(store, instance).await
            })
        })
        .await
    }

    /// Runs a command in `plugin`.
    pub async fn command(
        &self,
        plugin: &LoadedPlugin,
        invocation: Invocation,
        command: String,
        args: Vec<Arg>,
    ) -> CallOutcome<Result<String, CommandError>> {
        let phase = Phase::Command {
            room: invocation.room.clone(),
        };
        self.instantiated(plugin, phase, move |store, instance| {
            Box::pin(async move {
                instance
                    .ikkyu_plugin_guest()
                    .call_handle_command(store, &invocation, &command, &args)
                    .await
            })
        })
        .await
    }

    /// Delivers an event that `source` emitted to `plugin`.
    pub async fn event(
        &self,
        plugin: &LoadedPlugin,
        topic: String,
        payload: String,
        source: String,
    ) -> CallOutcome<Result<(), String>> {
        self.instantiated(plugin, Phase::Background, move |store, instance| {
            Box::pin(async move {
                instance
                    .ikkyu_plugin_guest()
                    .call_handle_event(store, &topic, &payload, &source)
                    .await
            })
        })
        .await
    }

    /// Hands a verified delivery to `plugin`'s webhook `name`.
    pub async fn webhook(
        &self,
        plugin: &LoadedPlugin,
        name: String,
        request: WebhookRequest,
    ) -> CallOutcome<Result<String, String>> {
        self.instantiated(plugin, Phase::Background, move |store, instance| {
            Box::pin(async move {
                instance
                    .ikkyu_plugin_guest()
                    .call_handle_webhook(store, &name, &request)
                    .await
            })
        })
        .await
    }

    /// Runs a due schedule in `plugin`.
    pub async fn schedule(
        &self,
        plugin: &LoadedPlugin,
        firing: Firing,
    ) -> CallOutcome<Result<(), String>> {
        self.instantiated(plugin, Phase::Background, move |store, instance| {
            Box::pin(async move {
                instance
                    .ikkyu_plugin_guest()
                    .call_handle_schedule(store, &firing)
                    .await
            })
        })
        .await
    }
}

/// The message of a caught panic.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

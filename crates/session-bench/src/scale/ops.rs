//! The measured operations: `load` and `save` of session number `idx`.

use std::sync::Arc;

use session_core::backend::Record;
use session_core::{Namespace, SessionStore};

use super::keys::key_for;
use crate::harness::Op;

/// `load` of session number `idx` (its key made per call: the same small cost at every size).
pub(super) struct ScaleLoad {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) namespace: Namespace,
}

impl Op for ScaleLoad {
    fn call(&mut self, idx: usize) -> impl std::future::Future<Output = bool> + Send + '_ {
        let key = key_for(&self.namespace, idx);
        async move { matches!(self.store.load(&key).await, Ok(Some(_))) }
    }
}

/// `save` of session number `idx` (it exists: the value is replaced by one of the same size).
pub(super) struct ScaleSave {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) namespace: Namespace,
    pub(super) record: Record,
}

impl Op for ScaleSave {
    fn call(&mut self, idx: usize) -> impl std::future::Future<Output = bool> + Send + '_ {
        let key = key_for(&self.namespace, idx);
        async move { self.store.save(&key, &self.record).await.is_ok() }
    }
}

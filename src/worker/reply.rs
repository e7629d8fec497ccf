//! Reply queues by name: each request names its front end's response queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::queue::Queue;

/// Opens a queue by name (the composition root supplies the adapter).
pub type OpenQueue = Arc<dyn Fn(&str) -> Arc<dyn Queue> + Send + Sync>;

/// Reply queues opened so far, reused across jobs.
#[derive(Clone)]
pub struct ReplyQueues {
    open: OpenQueue,
    opened: Arc<Mutex<HashMap<String, Arc<dyn Queue>>>>,
}

impl ReplyQueues {
    /// Reply queues opened with `open`.
    pub fn new(open: OpenQueue) -> Self {
        Self { open, opened: Default::default() }
    }

    /// The queue called `name`.
    pub fn get(&self, name: &str) -> Arc<dyn Queue> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        opened.entry(name.to_string()).or_insert_with(|| (self.open)(name)).clone()
    }
}

//! Every Lua script into Redis's script cache in one round trip. It sits above the modules
//! that own the scripts (`store`, `webhook_queue`), so neither needs to know the other's.

use crate::lua::Lua;
use crate::store::{StoreError, TaskStore};

impl TaskStore {
    /// Loads every script into Redis's script cache (one round trip). Called when a process
    /// connects; after a restart the first call of each script falls back to one `EVAL`.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut all: Vec<&Lua> = crate::store::scripts();
        all.push(&crate::webhook_queue::CLAIM);
        crate::lua::load_all(&all, &mut self.connection()).await?;
        Ok(())
    }
}

//! Who holds which role: the config's grants merged with those made in chat.
//!
//! Read from the database on every question rather than cached, so a grant
//! takes effect at once and several replicas always agree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::roles::Held;
use crate::store::{Db, StoreError};

/// Answers role questions.
#[derive(Debug, Clone)]
pub struct Directory {
    db: Db,
    /// Role -> users, from the config.
    config_roles: Arc<BTreeMap<String, Vec<String>>>,
}

impl Directory {
    /// A directory over `db` with the config's `[roles]`.
    pub fn new(db: Db, config_roles: BTreeMap<String, Vec<String>>) -> Self {
        Self {
            db,
            config_roles: Arc::new(config_roles),
        }
    }

    /// The database the directory reads.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Roles `user` holds from the config alone.
    pub fn config_roles_of(&self, user: &str) -> BTreeSet<String> {
        self.config_roles
            .iter()
            .filter(|(_, users)| users.iter().any(|u| u == user))
            .map(|(role, _)| role.clone())
            .collect()
    }

    /// Every role `user` holds.
    pub async fn held(&self, user: &str) -> Result<Held, StoreError> {
        let mut all = self.config_roles_of(user);
        all.extend(self.db.roles_of(user).await?);
        Ok(Held(all))
    }

    /// Everyone who holds `role`, from the config or chat, sorted.
    pub async fn members(&self, role: &str) -> Result<Vec<String>, StoreError> {
        let mut users: Vec<String> = self
            .everyone()
            .await?
            .into_iter()
            .filter(|(_, r, _)| r == role)
            .map(|(u, _, _)| u)
            .collect();
        users.dedup();
        Ok(users)
    }

    /// Every (user, role, source) known, sorted by user.
    pub async fn everyone(&self) -> Result<Vec<(String, String, &'static str)>, StoreError> {
        let mut all: Vec<(String, String, &'static str)> = self
            .config_roles
            .iter()
            .flat_map(|(role, users)| {
                users
                    .iter()
                    .map(move |u| (u.clone(), role.clone(), "config"))
            })
            .collect();
        all.extend(
            self.db
                .roles_all()
                .await?
                .into_iter()
                .map(|(u, r)| (u, r, "chat")),
        );
        all.sort();
        all.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        Ok(all)
    }
}

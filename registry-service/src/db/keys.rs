//! Keys the registry generates for itself and keeps in its database, so that every replica and
//! every restart shares them without configuration: generated once by whichever replica asks
//! first; later inserts lose the race and read the winner's key.

use diesel::prelude::*;

use super::{DbConnection, models::RegistryKeyRow, schema::registry_keys};
use crate::error::RegistryError;

/// The key named `name`, created from `generate` if there is none yet.
pub(crate) fn get_or_create(
    conn: &mut DbConnection,
    name: &str,
    generate: impl FnOnce() -> Vec<u8>,
    now: i64,
) -> Result<Vec<u8>, RegistryError> {
    let find = |conn: &mut DbConnection| {
        registry_keys::table
            .find(name)
            .select(RegistryKeyRow::as_select())
            .first(conn)
            .optional()
    };
    if let Some(row) = find(conn)? {
        return Ok(row.key_material);
    }
    let inserted = diesel::insert_into(registry_keys::table)
        .values(RegistryKeyRow {
            name: name.to_owned(),
            key_material: generate(),
            create_time: now,
        })
        .execute(conn);
    match inserted {
        Ok(_)
        | Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => find(conn)?
            .map(|row| row.key_material)
            .ok_or_else(|| RegistryError::Internal("registry key vanished".into())),
        Err(e) => Err(e.into()),
    }
}

//! The audit log: every change to stored billing state, with what changed and its source.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::{Map, Value};

use super::schema::audit_log;
use super::{to_db_time, DbConnection};

/// Fields that change on every sync without meaning anything.
const NOISE: &[&str] = &["synced_at", "updated_at", "created_at"];

/// `{field: [before, after]}` for every field that differs; `None` when nothing does.
pub fn changes(before: Option<&Value>, after: &Value) -> Option<Value> {
    let empty = Map::new();
    let before = before.and_then(Value::as_object).unwrap_or(&empty);
    let after = after.as_object()?;
    let diff: Map<String, Value> = after
        .iter()
        .filter(|(k, _)| !NOISE.contains(&k.as_str()))
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| {
            (
                k.clone(),
                Value::Array(vec![
                    before.get(k).cloned().unwrap_or(Value::Null),
                    v.clone(),
                ]),
            )
        })
        .collect();
    (!diff.is_empty()).then_some(Value::Object(diff))
}

/// What one audit row says.
pub struct Entry<'a> {
    pub subject: &'a str,
    pub entity: &'static str,
    pub entity_id: &'a str,
    /// `created` or `updated`.
    pub action: &'static str,
    pub changes: Value,
    /// The event (`event:evt_... type`) or call (`verify`, `api:subscription.cancel`) behind it.
    pub source: &'a str,
}

pub fn record(conn: &mut DbConnection, entry: Entry<'_>, now: DateTime<Utc>) -> anyhow::Result<()> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::audit_id.eq(uuid::Uuid::new_v4().to_string()),
            audit_log::subject.eq(entry.subject),
            audit_log::entity.eq(entry.entity),
            audit_log::entity_id.eq(entry.entity_id),
            audit_log::action.eq(entry.action),
            audit_log::changes.eq(entry.changes.to_string()),
            audit_log::source.eq(entry.source),
            audit_log::recorded_at.eq(to_db_time(now)),
        ))
        .execute(conn)?;
    Ok(())
}

/// Who changed stored state, and when: written on every audit row.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The event (`event:evt_... type`) or call (`api:checkout.verify`) behind the change.
    pub source: &'a str,
    pub now: DateTime<Utc>,
}

/// Records the change from `before` to `after` of one entity, if there is one; tells whether
/// there was.
pub fn record_change<T: serde::Serialize>(
    conn: &mut DbConnection,
    (subject, entity, entity_id): (&str, &'static str, &str),
    before: Option<&T>,
    after: &T,
    origin: Origin<'_>,
) -> anyhow::Result<bool> {
    let before = before.map(serde_json::to_value).transpose()?;
    let after = serde_json::to_value(after)?;
    let Some(changes) = changes(before.as_ref(), &after) else {
        return Ok(false);
    };
    {
        let action = if before.is_some() {
            "updated"
        } else {
            "created"
        };
        let source = origin.source;
        record(
            conn,
            Entry {
                subject,
                entity,
                entity_id,
                action,
                changes,
                source,
            },
            origin.now,
        )?;
    }
    Ok(true)
}

#[derive(Debug, Clone, Queryable, serde::Serialize)]
pub struct AuditRow {
    pub subject: String,
    pub entity: String,
    pub entity_id: String,
    pub action: String,
    pub changes: String,
    pub source: String,
}

pub fn for_entity(conn: &mut DbConnection, entity_id: &str) -> anyhow::Result<Vec<AuditRow>> {
    Ok(audit_log::table
        .filter(audit_log::entity_id.eq(entity_id))
        .order(audit_log::recorded_at.asc())
        .select((
            audit_log::subject,
            audit_log::entity,
            audit_log::entity_id,
            audit_log::action,
            audit_log::changes,
            audit_log::source,
        ))
        .load(conn)?)
}

/// One row of the audit trail, as `GET /v1/audit` lists it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct TrailRow {
    pub audit_id: String,
    pub subject: String,
    pub entity: String,
    pub entity_id: String,
    pub action: String,
    pub changes: String,
    pub source: String,
    pub recorded_at: chrono::NaiveDateTime,
}

/// The audit trail of the subjects `holder` covers, newest first, by keyset: rows older than
/// `before` (`(recorded_at, audit_id)` descending).
pub fn trail(
    conn: &mut DbConnection,
    holder: &super::listing::Holder,
    before: Option<&(chrono::NaiveDateTime, String)>,
    limit: i64,
) -> anyhow::Result<Vec<TrailRow>> {
    let mut query = audit_log::table.select(TrailRow::as_select()).into_boxed();
    match holder.keys() {
        (Some(exact), Some(pattern)) => {
            query = query.filter(
                audit_log::subject
                    .eq(exact)
                    .or(audit_log::subject.like(pattern).escape('\\')),
            );
        }
        (Some(exact), None) => query = query.filter(audit_log::subject.eq(exact)),
        _ => {}
    }
    if let Some((at, id)) = before {
        query = query.filter(
            audit_log::recorded_at.lt(*at).or(audit_log::recorded_at
                .eq(*at)
                .and(audit_log::audit_id.lt(id.clone()))),
        );
    }
    Ok(query
        .order((audit_log::recorded_at.desc(), audit_log::audit_id.desc()))
        .limit(limit)
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_list_only_meaningful_differences() {
        let before = json!({"status": "active", "quantity": 1, "synced_at": "a"});
        let after = json!({"status": "past_due", "quantity": 1, "synced_at": "b"});
        assert_eq!(
            changes(Some(&before), &after),
            Some(json!({"status": ["active", "past_due"]}))
        );
        assert_eq!(
            changes(
                Some(&after),
                &json!({"status": "past_due", "quantity": 1, "synced_at": "c"})
            ),
            None
        );
        assert_eq!(
            changes(None, &json!({"status": "active"})),
            Some(json!({"status": [null, "active"]}))
        );
    }
}

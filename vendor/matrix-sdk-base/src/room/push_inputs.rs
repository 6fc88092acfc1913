//! ikkyu's change (`vendor/README.md` in ikkyu): the parts of a room's
//! push-rule context that come from the store, kept in memory between sync
//! responses.
//!
//! Every sync response with a timeline computes the push actions of its
//! events, and their context (our own display name in the room, the power
//! levels) was read from the store and deserialized for each response: two
//! state events, a profile and a presence event, about half of what a bot
//! spent on a response that carried one message. They change only when the
//! room's state does, so they are read again only after a save changed
//! stored room state ([`SaveLockedStateStore::state_generation`]), and
//! responses that change the room's state themselves take the upstream
//! path.

use std::sync::{Arc, Mutex, PoisonError};

use ruma::events::room::power_levels::RoomPowerLevels;

use super::Room;
use crate::store::{Result as StoreResult, SaveLockedStateStore};

/// What [`get_push_room_context`](crate::response_processors::timeline::get_push_room_context)
/// reads from the store.
#[derive(Clone, Debug)]
pub(crate) struct PushInputs {
    /// Our own display name in the room, `None` when the store holds no
    /// member event for us.
    pub own_name: Option<String>,
    /// The room's power levels, `None` when they are not known.
    pub power_levels: Option<RoomPowerLevels>,
}

/// A value read from the store, kept with the save count it was read at
/// ([`SaveLockedStateStore::state_generation`] or
/// [`SaveLockedStateStore::account_data_generation`]); shared by clones.
/// The room's [`PushInputs`], and the client's push rules.
#[derive(Debug)]
pub(crate) struct KeptAt<T>(Arc<Mutex<Option<(u64, T)>>>);

impl<T> Clone for KeptAt<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for KeptAt<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Clone> KeptAt<T> {
    /// The kept value, if it was read at `generation`.
    pub(crate) fn get(&self, generation: u64) -> Option<T> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref().filter(|(at, _)| *at == generation).map(|(_, value)| value.clone())
    }

    /// Keeps `value`, read at `generation`.
    pub(crate) fn set(&self, generation: u64, value: T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((generation, value));
    }
}

impl Room {
    /// The push-rule inputs the store holds for this room, from memory while
    /// no save has changed stored room state since they were read.
    pub(crate) async fn stored_push_inputs(&self) -> StoreResult<PushInputs> {
        // Read before the store: a save that lands after this read bumps the
        // generation, so what is kept below is never taken for newer.
        let generation = SaveLockedStateStore::state_generation(&self.store);
        if let Some(inputs) = self.push_inputs.get(generation) {
            return Ok(inputs);
        }
        let own_name =
            Box::pin(self.get_member(self.own_user_id())).await?.map(|m| m.name().to_owned());
        let power_levels = self.power_levels().await.ok();
        let inputs = PushInputs { own_name, power_levels };
        self.push_inputs.set(generation, inputs.clone());
        Ok(inputs)
    }
}

#[cfg(test)]
mod tests {
    use matrix_sdk_test::{async_test, ruma_response_from_json};
    use ruma::{RoomId, api::client::sync::sync_events::v3, room_id, user_id};
    use serde_json::{Value, json};

    use crate::{BaseClient, sync::SyncResponse, test_utils::logged_in_base_client};

    const BOB: &str = "@bob:example.org";

    /// Two rules that read the context: a highlight for a message that
    /// contains our display name (Synapse still sends it; the spec's
    /// defaults no longer have it) and one for `@room` from a sender whose
    /// power level allows it.
    fn push_rules() -> Value {
        let highlight = json!(["notify", { "set_tweak": "highlight" }]);
        json!({
            "type": "m.push_rules",
            "content": { "global": { "override": [
                {
                    "rule_id": ".m.rule.contains_display_name",
                    "default": true,
                    "enabled": true,
                    "conditions": [{ "kind": "contains_display_name" }],
                    "actions": highlight,
                },
                {
                    "rule_id": ".m.rule.roomnotif",
                    "default": true,
                    "enabled": true,
                    "conditions": [
                        { "kind": "event_match", "key": "content.body", "pattern": "@room" },
                        { "kind": "sender_notification_permission", "key": "room" },
                    ],
                    "actions": highlight,
                },
            ] } },
        })
    }

    fn state(event_type: &str, state_key: &str, event_id: &str, content: Value) -> Value {
        json!({
            "type": event_type,
            "state_key": state_key,
            "sender": BOB,
            "event_id": event_id,
            "origin_server_ts": 1,
            "content": content,
        })
    }

    fn member(user_id: &str, name: &str, event_id: &str) -> Value {
        state("m.room.member", user_id, event_id, json!({ "membership": "join", "displayname": name }))
    }

    /// Power levels in which Bob may or may not notify the whole room.
    fn power_levels(bob_may_notify_room: bool, event_id: &str) -> Value {
        let bob = if bob_may_notify_room { 50 } else { 0 };
        state("m.room.power_levels", "", event_id, json!({ "users": { BOB: bob } }))
    }

    fn message(body: &str, event_id: &str) -> Value {
        json!({
            "type": "m.room.message",
            "sender": BOB,
            "event_id": event_id,
            "origin_server_ts": 2,
            "content": { "msgtype": "m.text", "body": body },
        })
    }

    async fn sync(
        client: &BaseClient,
        room_id: &RoomId,
        batch: &str,
        state: Vec<Value>,
        timeline: Vec<Value>,
    ) -> SyncResponse {
        let account_data = if batch == "1" { vec![push_rules()] } else { vec![] };
        sync_with(client, room_id, batch, account_data, state, timeline).await
    }

    async fn sync_with(
        client: &BaseClient,
        room_id: &RoomId,
        batch: &str,
        account_data: Vec<Value>,
        state: Vec<Value>,
        timeline: Vec<Value>,
    ) -> SyncResponse {
        let response: v3::Response = ruma_response_from_json(&json!({
            "next_batch": batch,
            "account_data": { "events": account_data },
            "rooms": { "join": { room_id.as_str(): {
                "state": { "events": state },
                "timeline": { "events": timeline, "limited": false },
            } } },
        }));
        client.receive_sync_response(response).await.expect("the sync response is processed")
    }

    /// Whether each timeline event of the response highlights us.
    fn highlights(response: &SyncResponse, room_id: &RoomId) -> Vec<bool> {
        response.rooms.joined[room_id]
            .timeline
            .events
            .iter()
            .map(|event| {
                event.push_actions().is_some_and(|actions| actions.iter().any(|a| a.is_highlight()))
            })
            .collect()
    }

    /// A stale display name or stale power levels kept in memory would show
    /// as the wrong highlight.
    #[async_test]
    async fn test_push_context_follows_own_name_and_power_levels() {
        let me = user_id!("@bot:example.org");
        let room_id = room_id!("!r:example.org");
        let client = logged_in_base_client(Some(me)).await;
        let create = state("m.room.create", "", "$c", json!({ "room_version": "10" }));

        let joined = sync(
            &client,
            room_id,
            "1",
            vec![
                create,
                member(me.as_str(), "Ikkyu", "$m1"),
                member(BOB, "Bob", "$m2"),
                power_levels(true, "$p1"),
            ],
            vec![message("hello Ikkyu", "$e1"), message("@room lunch", "$e2")],
        )
        .await;
        assert_eq!(highlights(&joined, room_id), [true, true]);

        // No state in these responses: the context comes from memory.
        for batch in ["2", "3"] {
            let response = sync(
                &client,
                room_id,
                batch,
                vec![],
                vec![
                    message("Ikkyu, points", "$e3"),
                    message("hello Sojun", "$e4"),
                    message("@room lunch", "$e5"),
                ],
            )
            .await;
            assert_eq!(highlights(&response, room_id), [true, false, true]);
        }

        // Our name and Bob's power change in a response's state, with no
        // timeline...
        sync(
            &client,
            room_id,
            "4",
            vec![member(me.as_str(), "Sojun", "$m3"), power_levels(false, "$p2")],
            vec![],
        )
        .await;

        // ...and the next response without state sees both.
        let response = sync(
            &client,
            room_id,
            "5",
            vec![],
            vec![
                message("hello Ikkyu", "$e6"),
                message("hello Sojun", "$e7"),
                message("@room lunch", "$e8"),
            ],
        )
        .await;
        assert_eq!(highlights(&response, room_id), [false, true, false]);

        // A change in the timeline: matrix-sdk applies a response's state
        // before its timeline, so it holds for the whole response, and after.
        let response = sync(
            &client,
            room_id,
            "6",
            vec![],
            vec![
                message("hello Sojun", "$e9"),
                member(me.as_str(), "Ikkyu", "$m4"),
                message("hello Ikkyu", "$e10"),
            ],
        )
        .await;
        assert_eq!(highlights(&response, room_id), [false, false, true]);
        let response =
            sync(&client, room_id, "7", vec![], vec![message("hello Ikkyu", "$e11")]).await;
        assert_eq!(highlights(&response, room_id), [true]);
    }

    /// The push rules kept in memory (`BaseClient::get_push_rules`, ikkyu's
    /// change) follow the account's rules as responses change them: from
    /// none stored, where no event gets push actions, to rules that
    /// highlight our display name, and back to none.
    #[async_test]
    async fn test_push_rules_follow_account_data() {
        let me = user_id!("@bot:example.org");
        let room_id = room_id!("!r:example.org");
        let client = logged_in_base_client(Some(me)).await;
        let create = state("m.room.create", "", "$c", json!({ "room_version": "10" }));
        let no_rules = json!({ "type": "m.push_rules", "content": { "global": {} } });
        // (batch, account data, push actions computed, highlighted)
        let steps = [
            ("0", vec![], false, false),
            ("1", vec![push_rules()], true, true),
            ("2", vec![], true, true),
            ("3", vec![no_rules], false, false),
            ("4", vec![], false, false),
        ];
        for (i, (batch, account_data, computed, highlighted)) in steps.into_iter().enumerate() {
            let state = if i == 0 {
                vec![create.clone(), member(me.as_str(), "Ikkyu", "$m1")]
            } else {
                vec![]
            };
            let event_id = format!("$e{batch}");
            let timeline = vec![message("hello Ikkyu", &event_id)];
            let response =
                sync_with(&client, room_id, batch, account_data, state, timeline).await;
            let event = &response.rooms.joined[room_id].timeline.events[0];
            assert_eq!(event.push_actions().is_some(), computed, "batch {batch}");
            assert_eq!(highlights(&response, room_id), [highlighted], "batch {batch}");
        }
    }
}

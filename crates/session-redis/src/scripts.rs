//! The Lua scripts of the operations that compare before they write.
//!
//! Plain writes are single native commands (`SET … PXAT` with `NX`/`XX`);
//! only `save_if` (compare the version token), `touch` (move a deadline kept
//! in the header), `rotate` and `reconcile` need a script — and, around
//! tombstones, `create` when its `SET NX` finds a key (it may hold a
//! tombstone), and `delete` and `update` of a store that keeps tombstones.
//! Each script of one key touches exactly `KEYS[1]`, so it runs on a cluster;
//! `rotate`'s two-key script is used on standalone and sentinel only.
//!
//! Every script treats a tombstone (an envelope flagged [`FLAG_TOMBSTONE`] at
//! [`FLAGS_OFFSET`]) as a missing session. Scripts that judge a deadline
//! (`reconcile`, and `delete` with tombstones on) read the Redis server's
//! clock with `TIME` — allowed before writes because Redis 7 scripts replicate
//! their effects, not the script (checked on 7.0.15): one clock per backend.
//!
//! Scripts are sent with `EVALSHA`; a server that does not know one yet
//! (`NOSCRIPT`: first use, restart, failover) gets it once with `EVAL`, which
//! also caches it.
//!
//! Header offsets come from `session_core::backend`'s constants (Lua strings
//! count from 1); numbers go through Lua doubles, exact below 2^53 (deadlines
//! in ms until the year 287396). Version tokens are compared as their 8 raw
//! bytes, never as numbers.

use fred::types::scripts::Script;
use session_core::backend::{
    EXPIRES_AT_OFFSET, FLAGS_OFFSET, FLAG_TOMBSTONE, FORMAT_OFFSET, FORMAT_VERSION, HEADER_LEN, MAGIC,
    MAX_EXPIRES_AT_OFFSET, PAYLOAD_LEN_OFFSET, UPDATED_AT_OFFSET, VERSION_OFFSET,
};

/// Lua helpers shared by the scripts: whether a header (and, given the value's length, the
/// whole value) is an envelope this build wrote, whether it is a tombstone's, its version
/// bytes and deadline, and the server's clock.
fn prelude() -> String {
    let magic: String = MAGIC.iter().map(|b| format!("\\{b}")).collect();
    format!(
        r#"
local HEADER = {header}
local MAGIC = "{magic}\{format}"
local function envelope(h, len)
  return #h == HEADER and string.sub(h, 1, {magic_end}) == MAGIC
    and struct.unpack('>I4', h, {plen}) + HEADER == len
end
local function version_of(h) return string.sub(h, {v0}, {v1}) end
local function deadline_of(h)
  local exp = struct.unpack('>I8', h, {exp})
  local cap = struct.unpack('>I8', h, {cap})
  if cap > 0 and exp > cap then return cap end
  return exp
end
-- Whether an envelope's header carries the tombstone flag.
local function tombstone(h)
  return bit.band(struct.unpack('>I2', h, {flags}), {tomb_flag}) ~= 0
end
-- Whether `key`, whose first HEADER bytes are `h`, holds a tombstone (a flagged envelope).
local function tombstone_at(key, h)
  return envelope(h, redis.call('STRLEN', key)) and tombstone(h)
end
-- The header `h` with its expires-at field set to `at`, ms.
local function with_expires(h, at)
  return string.sub(h, 1, {exp_at}) .. struct.pack('>I8', at) .. string.sub(h, {exp_end})
end
-- The Redis server's clock, ms since the Unix epoch.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- -1, 0 or 1: byte strings of one length compared byte by byte (Lua's `<` on strings follows
-- the server's locale). On big-endian integers this is their numeric order.
local function compare(a, b)
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  return 0
end
local function ms(n) return string.format('%.0f', n) end
"#,
        header = HEADER_LEN,
        format = FORMAT_VERSION,
        magic_end = FORMAT_OFFSET + 1,
        plen = PAYLOAD_LEN_OFFSET + 1,
        v0 = VERSION_OFFSET + 1,
        v1 = VERSION_OFFSET + 8,
        exp = EXPIRES_AT_OFFSET + 1,
        cap = MAX_EXPIRES_AT_OFFSET + 1,
        flags = FLAGS_OFFSET + 1,
        tomb_flag = FLAG_TOMBSTONE,
        exp_at = EXPIRES_AT_OFFSET,
        exp_end = EXPIRES_AT_OFFSET + 9,
    )
}

/// `save_if`: writes only if the stored value is an envelope with the expected version token.
fn save_if() -> String {
    prelude()
        + r#"
-- KEYS[1] session key; ARGV[1] new envelope; ARGV[2] expected version, 8 bytes;
-- ARGV[3] deadline, ms (the caller's, capped by its lifetime cap; 1 when already past).
-- Returns 1: written (a deadline already past removes the key); 0: missing (or a tombstone);
-- -1: not an envelope; {-2, version}: another version is stored.
local key = KEYS[1]
local h = redis.call('GETRANGE', key, 0, HEADER - 1)
if #h == 0 then return 0 end
if not envelope(h, redis.call('STRLEN', key)) then return -1 end
if tombstone(h) then return 0 end
local stored = version_of(h)
if stored ~= ARGV[2] then return {-2, stored} end
redis.call('SET', key, ARGV[1], 'PXAT', ARGV[3])
return 1
"#
}

/// `touch`: moves the deadline in the header and the key's expiry, capped at the lifetime cap.
fn touch() -> String {
    prelude()
        + &format!(
            r#"
-- KEYS[1] session key; ARGV[1] new deadline, ms.
-- Returns 1: moved (a deadline already past removes the key); 0: missing (or a tombstone, left
-- as is); -1: not an envelope.
local key = KEYS[1]
local h = redis.call('GETRANGE', key, 0, HEADER - 1)
if #h == 0 then return 0 end
if not envelope(h, redis.call('STRLEN', key)) then return -1 end
if tombstone(h) then return 0 end
local cap = struct.unpack('>I8', h, {cap})
local exp = tonumber(ARGV[1])
if cap > 0 and exp > cap then exp = cap end
-- The expiry first: a deadline already past deletes the key, and nothing may re-create it.
redis.call('PEXPIREAT', key, string.format('%.0f', exp))
if redis.call('EXISTS', key) == 1 then
  redis.call('SETRANGE', key, {exp_at}, struct.pack('>I8', exp))
end
return 1
"#,
            cap = MAX_EXPIRES_AT_OFFSET + 1,
            exp_at = EXPIRES_AT_OFFSET,
        )
}

/// `rotate` in one step (standalone, sentinel): moves the value from `KEYS[1]` to `KEYS[2]`
/// with its deadline, unless `KEYS[2]` holds another session. A store that keeps tombstones
/// leaves one under the old id (the old id is logged out, for every replay too).
fn rotate() -> String {
    prelude()
        + r#"
-- KEYS[1] old key; KEYS[2] new key; ARGV[1] (optional) a tombstone header to leave under the
-- old key, with the session's deadline (without it the old key is deleted).
-- Returns the moved value; 0: old missing (or a tombstone); -1: old is not an envelope (left in
-- place); -2: the new id holds another session (nothing changed). A tombstone under the new id
-- is replaced.
local function leave(key, h)
  if ARGV[1] and #ARGV[1] > 0 then
    local d = deadline_of(h)
    redis.call('SET', key, with_expires(ARGV[1], d), 'PXAT', ms(d))
  else
    redis.call('DEL', key)
  end
end
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local h = string.sub(v, 1, HEADER)
if not envelope(h, #v) then return -1 end
if tombstone(h) then return 0 end
local there = redis.call('GETRANGE', KEYS[2], 0, HEADER - 1)
if #there > 0 and not tombstone_at(KEYS[2], there) then
  -- An earlier, interrupted rotate already copied this very write: finish it.
  if #there == HEADER and version_of(there) == version_of(h) then
    leave(KEYS[1], h)
    return v
  end
  return -2
end
redis.call('SET', KEYS[2], v, 'PXAT', string.format('%.0f', deadline_of(h)))
leave(KEYS[1], h)
return v
"#
}

/// The first half of a cluster `rotate`: stores a copy under the new key unless it holds
/// another session (a copy of this very write counts as done).
fn copy_to() -> String {
    prelude()
        + r#"
-- KEYS[1] new key; ARGV[1] the value; ARGV[2] its version, 8 bytes; ARGV[3] its deadline, ms.
-- Returns 1: the key holds the value; -2: it holds another session. A tombstone is replaced.
local there = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
if #there > 0 and not tombstone_at(KEYS[1], there) then
  if #there == HEADER and version_of(there) == ARGV[2] then return 1 end
  return -2
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
return 1
"#
}

/// Deletes a key only while it holds the given version (the second half of a cluster
/// `rotate`, and undoing its copy); the rotate of a store that keeps tombstones leaves one
/// instead.
fn del_if() -> String {
    prelude()
        + r#"
-- KEYS[1] key; ARGV[1] version, 8 bytes; ARGV[2] (optional) a tombstone header to leave in
-- its place, with the session's deadline.
-- Returns 1: deleted; 0: missing; -2: holds another version (or not an envelope).
local h = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
if #h == 0 then return 0 end
if #h ~= HEADER or version_of(h) ~= ARGV[1] then return -2 end
if ARGV[2] and #ARGV[2] > 0 then
  local d = deadline_of(h)
  redis.call('SET', KEYS[1], with_expires(ARGV[2], d), 'PXAT', ms(d))
else
  redis.call('DEL', KEYS[1])
end
return 1
"#
}

/// `create` when its `SET NX` found the key taken: writes over a tombstone (a deleted session's
/// id may be taken again), or over nothing when the key went away meanwhile.
fn create_over() -> String {
    prelude()
        + r#"
-- KEYS[1] session key; ARGV[1] new envelope; ARGV[2] deadline, ms.
-- Returns 1: written; 0: the key holds something that is not a tombstone (nothing changed).
local key = KEYS[1]
-- pcall: a key of another Redis type is simply taken, as for SET NX.
local h = redis.pcall('GETRANGE', key, 0, HEADER - 1)
if type(h) ~= 'string' then return 0 end
if #h > 0 then
  if not tombstone_at(key, h) then return 0 end
elseif redis.call('EXISTS', key) == 1 then
  return 0
end
redis.call('SET', key, ARGV[1], 'PXAT', ARGV[2])
return 1
"#
}

/// `update` of a store that keeps tombstones: `SET XX`, except that a tombstone counts as
/// missing (a request finishing after a logout never revives the session).
fn update_live() -> String {
    prelude()
        + r#"
-- KEYS[1] session key; ARGV[1] new envelope; ARGV[2] deadline, ms.
-- Returns 1: written; 0: missing, or a tombstone (left as is).
local key = KEYS[1]
-- pcall: like SET XX, the write replaces a key of another Redis type.
local h = redis.pcall('GETRANGE', key, 0, HEADER - 1)
if type(h) == 'string' then
  if #h == 0 then
    -- An empty string is a key too, and SET XX would replace it.
    if redis.call('EXISTS', key) == 0 then return 0 end
  elseif tombstone_at(key, h) then
    return 0
  end
end
redis.call('SET', key, ARGV[1], 'PXAT', ARGV[2])
return 1
"#
}

/// `delete` of a store that keeps tombstones: the session (or nothing, or an earlier
/// tombstone) is replaced by this delete's tombstone.
fn delete_tomb() -> String {
    prelude()
        + r#"
-- KEYS[1] session key; ARGV[1] the tombstone's header (its expires-at is set here);
-- ARGV[2] the tombstone's lifetime when the key holds nothing, ms.
-- Returns 1: a session was there, now a tombstone with the session's own (capped) deadline;
-- 0: no session (the key now holds a tombstone lasting the lifetime from the server's clock,
-- or, where it held a tombstone, the longer of that one's deadline and the lifetime: the
-- stored tombstone names the latest delete). Bytes that are not an envelope are deleted
-- like a session (1): a tombstone with the key's own deadline takes their place.
local key = KEYS[1]
local now = now_ms()
local h = redis.call('GETRANGE', key, 0, HEADER - 1)
-- A value past its own deadline by the server's clock (Redis removes a key only after its
-- deadline's millisecond) counts as nothing: the tombstone must not vanish with it.
if #h > 0 then
  if not envelope(h, redis.call('STRLEN', key)) then
    local at = redis.call('PEXPIRETIME', key)
    if at <= now then at = now + tonumber(ARGV[2]) end
    redis.call('SET', key, with_expires(ARGV[1], at), 'PXAT', ms(at))
    return 1
  end
  local deadline = deadline_of(h)
  if deadline > now then
    if tombstone(h) then
      deadline = math.max(deadline, now + tonumber(ARGV[2]))
      redis.call('SET', key, with_expires(ARGV[1], deadline), 'PXAT', ms(deadline))
      return 0
    end
    redis.call('SET', key, with_expires(ARGV[1], deadline), 'PXAT', ms(deadline))
    return 1
  end
end
local deadline = now + tonumber(ARGV[2])
redis.call('SET', key, with_expires(ARGV[1], deadline), 'PXAT', ms(deadline))
return 0
"#
}

/// `reconcile`: `session_core::backend::decide` on one key, read and written in one script.
fn reconcile() -> String {
    prelude()
        + &format!(
            r#"
-- KEYS[1] session key.
-- ARGV[1] the change's base version, 8 bytes (8 zero bytes: based on nothing);
-- ARGV[2] 'w' (a write), 'd' (a delete) or 'e' (a write that has expired since);
-- ARGV[3] a write's envelope, or the delete's tombstone header (its expires-at is set here);
-- ARGV[4] a write's deadline, or the delete's `until` (its tombstone's deadline when the key
--         holds no session), ms;
-- ARGV[5], ARGV[6] (a write only) its updated-at and its version, 8 bytes each, big-endian.
-- Returns 1 Applied, 2 Won, 3 Kept, 4 Expired; -1: not an envelope (left as is).
local APPLIED, WON, KEPT, EXPIRED = 1, 2, 3, 4
local key = KEYS[1]
local write = ARGV[2] == 'w'
-- Deadlines are judged by the Redis server's clock.
local now = now_ms()
-- A write already past its deadline changes nothing.
if write and tonumber(ARGV[4]) <= now then return EXPIRED end
-- What the key holds: nothing (or only something past its deadline by the server's clock:
-- Redis removes a key only after its deadline's millisecond), a tombstone, or a session.
local h = redis.call('GETRANGE', key, 0, HEADER - 1)
local stored = 'absent'
if #h > 0 then
  if not envelope(h, redis.call('STRLEN', key)) then return -1 end
  if deadline_of(h) > now then
    if tombstone(h) then stored = 'tombstone' else stored = 'live' end
  end
end
-- (Expire, _): the session's last write elsewhere has expired; if the store still holds that
-- write's base (nobody wrote since), the older state goes too, leaving nothing (no tombstone).
if ARGV[2] == 'e' then
  if stored == 'live' and version_of(h) == ARGV[1] then
    redis.call('DEL', key)
    return APPLIED
  end
  return EXPIRED
end
-- Based: the store holds the change's base (the version of a session, or of a tombstone the
-- change was made knowing of), or nothing at all.
local based = stored == 'absent' or version_of(h) == ARGV[1]
local outcome = WON
if based then outcome = APPLIED end
-- The stored tombstone kept, its deadline moved to `deadline` if that is later.
local function extend(deadline, answer)
  if deadline > struct.unpack('>I8', h, {exp}) then
    redis.call('SET', key, with_expires(h, deadline), 'PXAT', ms(deadline))
  end
  return answer
end
if not write then
  if stored == 'absent' then
    -- (Delete, Absent): a tombstone lasting until the change's own deadline (at least 1 ms).
    local deadline = math.max(tonumber(ARGV[4]), now + 1)
    redis.call('SET', key, with_expires(ARGV[3], deadline), 'PXAT', ms(deadline))
    return outcome
  elseif stored == 'live' then
    -- (Delete, Live): a delete wins over any session; the tombstone takes its deadline.
    local deadline = deadline_of(h)
    redis.call('SET', key, with_expires(ARGV[3], deadline), 'PXAT', ms(deadline))
    return outcome
  else
    -- (Delete, Tombstone): one deleted state, named by this delete (a write based on the
    -- earlier one still loses), lasting the longer of the two.
    local deadline = math.max(tonumber(ARGV[4]), deadline_of(h), now + 1)
    redis.call('SET', key, with_expires(ARGV[3], deadline), 'PXAT', ms(deadline))
    return APPLIED
  end
end
if stored == 'absent' then
  -- (Write, Absent): stored.
  redis.call('SET', key, ARGV[3], 'PXAT', ARGV[4])
  return APPLIED
elseif stored == 'tombstone' and based then
  -- (Write, Tombstone) made knowing of this very delete (a session created again): stored.
  redis.call('SET', key, ARGV[3], 'PXAT', ARGV[4])
  return APPLIED
elseif stored == 'tombstone' then
  -- (Write, Tombstone): the tombstone wins, and lasts as long as the write it blocked would have.
  return extend(tonumber(ARGV[4]), KEPT)
elseif based then
  -- (Write, Live) on its base: stored.
  redis.call('SET', key, ARGV[3], 'PXAT', ARGV[4])
  return APPLIED
end
-- (Write, Live), a conflict: the greater (updated_at, version) wins, whichever came first.
local order = compare(ARGV[5], string.sub(h, {u0}, {u1}))
if order == 0 then order = compare(ARGV[6], version_of(h)) end
if order > 0 then
  redis.call('SET', key, ARGV[3], 'PXAT', ARGV[4])
  return WON
end
return KEPT
"#,
            exp = EXPIRES_AT_OFFSET + 1,
            u0 = UPDATED_AT_OFFSET + 1,
            u1 = UPDATED_AT_OFFSET + 8,
        )
}

/// The scripts with their SHA-1s, computed once per store.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub(crate) save_if: Script,
    pub(crate) touch: Script,
    pub(crate) rotate: Script,
    pub(crate) copy_to: Script,
    pub(crate) del_if: Script,
    pub(crate) create_over: Script,
    pub(crate) update_live: Script,
    pub(crate) delete_tomb: Script,
    pub(crate) reconcile: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            save_if: Script::from_lua(save_if()),
            touch: Script::from_lua(touch()),
            rotate: Script::from_lua(rotate()),
            copy_to: Script::from_lua(copy_to()),
            del_if: Script::from_lua(del_if()),
            create_over: Script::from_lua(create_over()),
            update_live: Script::from_lua(update_live()),
            delete_tomb: Script::from_lua(delete_tomb()),
            reconcile: Script::from_lua(reconcile()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_come_from_the_envelope_constants() {
        let p = prelude();
        assert!(p.contains("local HEADER = 52"), "{p}");
        assert!(p.contains(r#""\83\69\83\83\1""#), "{p}");
        assert!(p.contains("h, 9)"), "payload length at byte 8: {p}");
        assert!(
            p.contains("string.sub(h, 13, 20)"),
            "version at bytes 12..20: {p}"
        );
        assert!(touch().contains("SETRANGE', key, 36,"));
        assert!(
            p.contains("struct.unpack('>I2', h, 7), 1)"),
            "flags at byte 6: {p}"
        );
        assert!(
            p.contains("string.sub(h, 1, 36) .. struct.pack('>I8', at) .. string.sub(h, 45)"),
            "expires-at at bytes 36..44: {p}"
        );
        assert!(
            reconcile().contains("string.sub(h, 29, 36)"),
            "updated-at at bytes 28..36"
        );
    }
}

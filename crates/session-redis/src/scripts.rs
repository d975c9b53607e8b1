//! The Lua scripts of the operations that compare before they write.
//!
//! Plain writes are single native commands (`SET … PXAT` with `NX`/`XX`);
//! only `save_if` (compare the version token), `touch` (move a deadline kept
//! in the header) and `rotate` need a script. Each script of one key touches
//! exactly `KEYS[1]`, so it runs on a cluster; `rotate`'s two-key script is
//! used on standalone and sentinel only. Scripts are sent with `EVALSHA`; a
//! server that does not know one yet (`NOSCRIPT`: first use, restart,
//! failover) gets it once with `EVAL`, which also caches it.
//!
//! Header offsets come from `session_core::backend`'s constants (Lua strings
//! count from 1); numbers go through Lua doubles, exact below 2^53 (deadlines
//! in ms until the year 287396). Version tokens are compared as their 8 raw
//! bytes, never as numbers.

use fred::types::scripts::Script;
use session_core::backend::{
    EXPIRES_AT_OFFSET, FORMAT_OFFSET, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_EXPIRES_AT_OFFSET,
    PAYLOAD_LEN_OFFSET, VERSION_OFFSET,
};

/// Lua helpers shared by the scripts: whether a header (and, given the value's length, the
/// whole value) is an envelope this build wrote, and the 8 version bytes of a header.
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
"#,
        header = HEADER_LEN,
        format = FORMAT_VERSION,
        magic_end = FORMAT_OFFSET + 1,
        plen = PAYLOAD_LEN_OFFSET + 1,
        v0 = VERSION_OFFSET + 1,
        v1 = VERSION_OFFSET + 8,
        exp = EXPIRES_AT_OFFSET + 1,
        cap = MAX_EXPIRES_AT_OFFSET + 1,
    )
}

/// `save_if`: writes only if the stored value is an envelope with the expected version token.
fn save_if() -> String {
    prelude()
        + r#"
-- KEYS[1] session key; ARGV[1] new envelope; ARGV[2] expected version, 8 bytes;
-- ARGV[3] deadline, ms (the caller's, capped by its lifetime cap; 1 when already past).
-- Returns 1: written (a deadline already past removes the key); 0: missing;
-- -1: not an envelope; {-2, version}: another version is stored.
local key = KEYS[1]
local h = redis.call('GETRANGE', key, 0, HEADER - 1)
if #h == 0 then return 0 end
if not envelope(h, redis.call('STRLEN', key)) then return -1 end
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
-- Returns 1: moved (a deadline already past removes the key); 0: missing; -1: not an envelope.
local key = KEYS[1]
local h = redis.call('GETRANGE', key, 0, HEADER - 1)
if #h == 0 then return 0 end
if not envelope(h, redis.call('STRLEN', key)) then return -1 end
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
/// with its deadline, unless `KEYS[2]` holds another session.
fn rotate() -> String {
    prelude()
        + r#"
-- KEYS[1] old key; KEYS[2] new key.
-- Returns the moved value; 0: old missing; -1: old is not an envelope (left in place);
-- -2: the new id holds another session (nothing changed).
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local h = string.sub(v, 1, HEADER)
if not envelope(h, #v) then return -1 end
local there = redis.call('GETRANGE', KEYS[2], 0, HEADER - 1)
if #there > 0 then
  -- An earlier, interrupted rotate already copied this very write: finish it.
  if #there == HEADER and version_of(there) == version_of(h) then
    redis.call('DEL', KEYS[1])
    return v
  end
  return -2
end
redis.call('SET', KEYS[2], v, 'PXAT', string.format('%.0f', deadline_of(h)))
redis.call('DEL', KEYS[1])
return v
"#
}

/// The first half of a cluster `rotate`: stores a copy under the new key unless it holds
/// another session (a copy of this very write counts as done).
fn copy_to() -> String {
    prelude()
        + r#"
-- KEYS[1] new key; ARGV[1] the value; ARGV[2] its version, 8 bytes; ARGV[3] its deadline, ms.
-- Returns 1: the key holds the value; -2: it holds another session.
local there = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
if #there > 0 then
  if #there == HEADER and version_of(there) == ARGV[2] then return 1 end
  return -2
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
return 1
"#
}

/// Deletes a key only while it holds the given version (the second half of a cluster
/// `rotate`, and undoing its copy).
fn del_if() -> String {
    prelude()
        + r#"
-- KEYS[1] key; ARGV[1] version, 8 bytes.
-- Returns 1: deleted; 0: missing; -2: holds another version (or not an envelope).
local h = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
if #h == 0 then return 0 end
if #h ~= HEADER or version_of(h) ~= ARGV[1] then return -2 end
redis.call('DEL', KEYS[1])
return 1
"#
}

/// The scripts with their SHA-1s, computed once per store.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub(crate) save_if: Script,
    pub(crate) touch: Script,
    pub(crate) rotate: Script,
    pub(crate) copy_to: Script,
    pub(crate) del_if: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            save_if: Script::from_lua(save_if()),
            touch: Script::from_lua(touch()),
            rotate: Script::from_lua(rotate()),
            copy_to: Script::from_lua(copy_to()),
            del_if: Script::from_lua(del_if()),
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
    }
}

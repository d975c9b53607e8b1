//! The Lua scripts that make read-modify-write operations atomic on one key.
//!
//! Each touches exactly one key (`KEYS[1]`), so it runs on a cluster. They are sent with
//! `EVALSHA`; a server that does not know a script yet (`NOSCRIPT`: first use, restart,
//! failover) gets it once with `EVAL`, which also caches it. Offsets are those of the envelope
//! header (`session_core::VERSION_OFFSET` = 12, ..., Lua strings count from 1); numbers go
//! through Lua doubles, exact below 2^53 (times in ms until the year 287396, versions).

use fred::types::scripts::Script;

/// `save`, `update` and `save_if`: reads the old header and writes the new value with the
/// version bumped, `created_at` and `max_expires_at` kept and the deadline capped, all at once.
/// A stored value counts as a session when it has the magic and format version 1 (and, for
/// `update` and `save_if`, the length its header declares; the codec id is checked by readers
/// only). A plain `save` over a value that is not an envelope replaces it as a new session.
pub(crate) const WRITE: &str = r#"
-- KEYS[1] session key
-- ARGV[1] envelope as for a new session (version 1, caller's created_at and max_expires_at)
-- ARGV[2] mode: '0' save (upsert), '1' update (only if present), '2' save_if (present, version ARGV[3])
-- ARGV[3] expected version, 8 bytes big-endian (mode '2')
-- ARGV[4] requested deadline, ms (not capped)
-- ARGV[5] deadline of a new session, ms (ARGV[4] capped by the caller's max_expires_at)
-- Returns {1}: stored ARGV[1] as a new session; {2, version, created_at, expires_at, max_expires_at}:
-- overwrote an existing session; {0}: missing; {-1}: not an envelope; {-2, version}: conflict.
local key = KEYS[1]
local mode = ARGV[2]
local old = redis.call('GETRANGE', key, 0, 51)
local valid = #old == 52 and string.sub(old, 1, 5) == 'SESS\1'
if valid and mode ~= '0' then
  valid = struct.unpack('>I4', old, 9) + 52 == redis.call('STRLEN', key)
end
if not valid then
  if mode ~= '0' then
    if #old == 0 then return {0} end
    return {-1}
  end
  redis.call('SET', key, ARGV[1], 'PXAT', ARGV[5])
  return {1}
end
if mode == '2' and string.sub(old, 13, 20) ~= ARGV[3] then
  return {-2, struct.unpack('>I8', old, 13)}
end
local version = struct.unpack('>I8', old, 13) + 1
local created = struct.unpack('>I8', old, 21)
local maxexp = struct.unpack('>I8', old, 45)
local exp = tonumber(ARGV[4])
if maxexp > 0 and exp > maxexp then exp = maxexp end
-- The caller's envelope as sent, then its header patched in place (bytes 12..52: version,
-- created_at, updated_at as sent, deadline, max_expires_at): SETRANGE keeps the expiry, and Lua
-- never copies the payload (building the value by concatenation cost a sixth of the throughput).
local new = ARGV[1]
redis.call('SET', key, new, 'PXAT', string.format('%.0f', exp))
redis.call('SETRANGE', key, 12,
  struct.pack('>I8I8', version, created) .. string.sub(new, 29, 36) .. struct.pack('>I8I8', exp, maxexp))
return {2, version, created, exp, maxexp}
"#;

/// `touch`: moves the deadline in the header and the key's expiry, capped at `max_expires_at`.
pub(crate) const TOUCH: &str = r#"
-- KEYS[1] session key; ARGV[1] new deadline, ms.
-- Returns 1: moved; 0: missing; -1: not an envelope.
local key = KEYS[1]
local old = redis.call('GETRANGE', key, 0, 51)
if #old == 0 then return 0 end
if #old ~= 52 or string.sub(old, 1, 5) ~= 'SESS\1'
    or struct.unpack('>I4', old, 9) + 52 ~= redis.call('STRLEN', key) then
  return -1
end
local maxexp = struct.unpack('>I8', old, 45)
local exp = tonumber(ARGV[1])
if maxexp > 0 and exp > maxexp then exp = maxexp end
redis.call('SETRANGE', key, 36, struct.pack('>I8', exp))
redis.call('PEXPIREAT', key, string.format('%.0f', exp))
return 1
"#;

/// The first half of `rotate`: takes the value away (GET + DEL at once), unless it is not an
/// envelope, which stays where it is.
pub(crate) const TAKE: &str = r#"
-- KEYS[1] old session key.
-- Returns the value (now deleted); nil: missing; -1: not an envelope (left in place).
local v = redis.call('GET', KEYS[1])
if not v then return false end
if #v < 52 or string.sub(v, 1, 5) ~= 'SESS\1' or struct.unpack('>I4', v, 9) + 52 ~= #v then
  return -1
end
redis.call('DEL', KEYS[1])
return v
"#;

/// The scripts with their SHA-1s, computed once.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub(crate) write: Script,
    pub(crate) touch: Script,
    pub(crate) take: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            write: Script::from_lua(WRITE),
            touch: Script::from_lua(TOUCH),
            take: Script::from_lua(TAKE),
        }
    }
}

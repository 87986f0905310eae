"""Lua scripts that make budget accounting atomic, one round trip each.

KEYS always belong to one API key (same hash tag), so the scripts run on a Redis Cluster too.

Every charge is recorded under the request's id (a *reservation record*), which makes each
script safe to run twice: a reserve retried after a lost reply finds its own record and charges
nothing more, and a release after a reserve that timed out finds out whether that reserve ran.
Reservation record states::

    held       the reserve script charged ``n`` clips (or took over an abandoned charge, n=0)
    void       released before any reserve with this id ran: a late reserve charges nothing
    released   the charge was given back
    committed  the answer was delivered and stored for Idempotency-Key replay
"""

# KEYS[1] key record, KEYS[2] idempotency record (may be the empty-idempotency sentinel),
# KEYS[3] reservation record of this request id
# ARGV[1] clips to reserve, ARGV[2] '1' when an Idempotency-Key was sent, ARGV[3] request
# fingerprint, ARGV[4] idempotency TTL seconds, ARGV[5] request id, ARGV[6] now (unix seconds),
# ARGV[7] seconds after which a pending request counts as abandoned (its server died),
# ARGV[8] reservation record TTL seconds, ARGV[9] the key record's revision the caller's copy
# was read at ('' skips the check)
# Returns {status, budget, spent, payload}
#
# 'takeover': the first request with this Idempotency-Key was charged but never finished (its
# process died). The retry inherits that charge and is answered without a second one.
# 'void': this request id was released before the script ran (its caller gave up on it).
# 'stale': the record changed (policies, revocation) since the caller's copy: nothing charged;
# the caller reads the record again and retries with the same request id.
RESERVE = """
local rec = KEYS[1]
local fields = redis.call('HMGET', rec, 'budget', 'spent', 'revoked', 'rev')
if not fields[1] then return {'unknown', 0, 0, ''} end
local budget = tonumber(fields[1])
local spent = tonumber(fields[2] or '0')
local prior = redis.call('GET', KEYS[3])
if prior then
  local held = cjson.decode(prior)
  if held['state'] == 'held' then return {held['outcome'], budget, spent, ''} end
  return {'void', budget, spent, ''}
end
if ARGV[9] and ARGV[9] ~= '' and tonumber(fields[4] or '0') ~= tonumber(ARGV[9]) then
  return {'stale', budget, spent, ''}
end
if fields[3] == '1' then return {'revoked', budget, spent, ''} end
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    local record = cjson.decode(existing)
    if record['fp'] ~= ARGV[3] then return {'mismatch', budget, spent, ''} end
    if record['state'] == 'done' then return {'replay', budget, spent, record['response']} end
    if tonumber(ARGV[6]) - tonumber(record['started'] or 0) < tonumber(ARGV[7]) then
      return {'in_progress', budget, spent, ''}
    end
    record['started'] = tonumber(ARGV[6])
    record['request_id'] = ARGV[5]
    redis.call('SET', KEYS[2], cjson.encode(record), 'EX', tonumber(ARGV[4]))
    redis.call('SET', KEYS[3], cjson.encode({state='held', n=0, outcome='takeover'}),
               'EX', tonumber(ARGV[8]))
    return {'takeover', budget, spent, ''}
  end
end
local n = tonumber(ARGV[1])
if spent + n > budget then return {'exhausted', budget, spent, ''} end
spent = redis.call('HINCRBY', rec, 'spent', n)
redis.call('SET', KEYS[3], cjson.encode({state='held', n=n, outcome='ok'}), 'EX', tonumber(ARGV[8]))
if ARGV[2] == '1' then
  local pending = cjson.encode({state='pending', fp=ARGV[3], request_id=ARGV[5],
                                started=tonumber(ARGV[6])})
  redis.call('SET', KEYS[2], pending, 'EX', tonumber(ARGV[4]))
end
return {'ok', budget, spent, ''}
"""

# KEYS[1] key record, KEYS[2] idempotency record, KEYS[3] reservation record
# ARGV[1] request id, ARGV[2] reservation record TTL seconds
# Returns {state before, clips given back, spent now}. Safe to run any number of times.
#
# A charge is given back and the pending Idempotency-Key record is dropped (a retry starts
# afresh). A takeover charged nothing, so nothing is given back; its pending record is marked
# abandoned, so a retry inherits the earlier charge at once. With no record yet, a 'void'
# tombstone keeps a reserve that is still on its way from charging.
RELEASE = """
local prior = redis.call('GET', KEYS[3])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or 0)
if not prior then
  redis.call('SET', KEYS[3], cjson.encode({state='void'}), 'EX', tonumber(ARGV[2]))
  return {'none', 0, spent}
end
local held = cjson.decode(prior)
if held['state'] ~= 'held' then return {held['state'], 0, spent} end
local n = tonumber(held['n'])
if n > 0 then spent = redis.call('HINCRBY', KEYS[1], 'spent', -n) end
local existing = redis.call('GET', KEYS[2])
if existing then
  local record = cjson.decode(existing)
  if record['state'] == 'pending' and record['request_id'] == ARGV[1] then
    if n > 0 then
      redis.call('DEL', KEYS[2])
    else
      record['started'] = 0
      redis.call('SET', KEYS[2], cjson.encode(record), 'KEEPTTL')
    end
  end
end
redis.call('SET', KEYS[3], cjson.encode({state='released', n=n}), 'KEEPTTL')
return {'held', n, spent}
"""

# For each request i = 1..N (all of one API key): KEYS[2i-1] idempotency record, KEYS[2i]
# reservation record (or the sentinel); ARGV[1] TTL seconds, ARGV[2i] fingerprint,
# ARGV[2i+1] response JSON
COMMIT = """
for i = 1, #KEYS / 2 do
  local done = cjson.encode({state='done', fp=ARGV[2 * i], response=ARGV[2 * i + 1]})
  redis.call('SET', KEYS[2 * i - 1], done, 'EX', tonumber(ARGV[1]))
  if redis.call('EXISTS', KEYS[2 * i]) == 1 then
    redis.call('SET', KEYS[2 * i], cjson.encode({state='committed'}), 'KEEPTTL')
  end
end
return 1
"""

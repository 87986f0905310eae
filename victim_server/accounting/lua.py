"""Lua scripts that make budget accounting atomic, one round trip each.

KEYS always belong to one API key (same hash tag), so the scripts run on a Redis Cluster too.
"""

# KEYS[1] key record, KEYS[2] idempotency record (may be the empty-idempotency sentinel)
# ARGV[1] clips to reserve, ARGV[2] '1' when an Idempotency-Key was sent, ARGV[3] request
# fingerprint, ARGV[4] idempotency TTL seconds, ARGV[5] request id, ARGV[6] now (unix seconds),
# ARGV[7] seconds after which a pending request counts as abandoned (its server died)
# Returns {status, budget, spent, payload}
#
# 'takeover': the first request with this Idempotency-Key was charged but never finished (its
# process died). The retry inherits that charge and is answered without a second one.
RESERVE = """
local rec = KEYS[1]
if redis.call('EXISTS', rec) == 0 then return {'unknown', 0, 0, ''} end
local budget = tonumber(redis.call('HGET', rec, 'budget'))
local spent = tonumber(redis.call('HGET', rec, 'spent'))
if redis.call('HGET', rec, 'revoked') == '1' then return {'revoked', budget, spent, ''} end
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
    return {'takeover', budget, spent, ''}
  end
end
local n = tonumber(ARGV[1])
if spent + n > budget then return {'exhausted', budget, spent, ''} end
spent = redis.call('HINCRBY', rec, 'spent', n)
if ARGV[2] == '1' then
  local pending = cjson.encode({state='pending', fp=ARGV[3], request_id=ARGV[5],
                                started=tonumber(ARGV[6])})
  redis.call('SET', KEYS[2], pending, 'EX', tonumber(ARGV[4]))
end
return {'ok', budget, spent, ''}
"""

# KEYS[1] key record, KEYS[2] idempotency record; ARGV[1] clips to give back, ARGV[2] '1' if
# an idempotency record was written. Returns the new spent total.
REFUND = """
local spent = redis.call('HINCRBY', KEYS[1], 'spent', -tonumber(ARGV[1]))
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
return spent
"""

# KEYS[1] idempotency record; ARGV[1] fingerprint, ARGV[2] response JSON, ARGV[3] TTL seconds
COMMIT = """
local done = cjson.encode({state='done', fp=ARGV[1], response=ARGV[2]})
redis.call('SET', KEYS[1], done, 'EX', tonumber(ARGV[3]))
return 1
"""

-- wrk script: each request carries the next of many API keys (a file of tokens, one a line),
-- so that no two requests in flight share a key and every lookup misses the process cache.
-- Usage: wrk -s bench/tokens.lua URL -- TOKENS_FILE
local tokens = {}
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  counter = math.random(#tokens)  -- threads start at different places
end

function request()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. token})
end

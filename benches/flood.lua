-- wrk script for benches/flood.sh: every request carries the next API token of the file given
-- after `--` in x-api-token, cycling through the file (run with -t1 so that each token is
-- sent once per pass).
local tokens = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
end

function request()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/v1/roles", { ["x-api-token"] = tokens[i] })
end

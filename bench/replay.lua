-- wrk script: replays a pre-signed corpus, one request per line "<signature>\t<body>".
-- Each wrk thread starts at its own offset so threads never send the same event at once.
local corpus = os.getenv("CORPUS") or "bench/corpus.tsv"
local sigs, bodies = {}, {}
for line in io.lines(corpus) do
  local tab = line:find("\t", 1, true)
  if tab then
    sigs[#sigs + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
end
local n = #bodies
local threads = 0
local i = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")
  -- Thread t takes lines t, t+T, t+2T, ...: disjoint slices of the corpus.
  i = id
  step = nthreads
end

function request()
  local k = (i % n) + 1
  i = i + step
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = sigs[k],
  }, bodies[k])
end

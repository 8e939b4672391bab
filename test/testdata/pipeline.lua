-- wrk script: each connection sends 10 requests back to back (HTTP/1.1
-- pipelining) and wrk checks the 10 responses.
init = function(args)
  local r = {}
  for i = 1, 10 do
    r[i] = wrk.format(nil, "/pipelined/" .. i)
  end
  req = table.concat(r)
end

request = function()
  return req
end

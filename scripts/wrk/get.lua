-- wrk: GET one of the paths listed in $WRK_PATHS (one per line), at random.
local paths = {}

function init(args)
	for line in io.lines(os.getenv("WRK_PATHS")) do
		paths[#paths + 1] = line
	end
end

function request()
	return wrk.format("GET", paths[math.random(#paths)])
end

package main

import (
	"bytes"
	"encoding/json"
	"runtime/debug"
	"testing"
	"testing/fstest"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestParseCgroupLimit(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     int64
		ok, err  bool
	}{
		{"v2 bytes", "536870912\n", 536870912, true, false},
		{"v2 max", "max\n", 0, false, false},
		{"v1 bytes", "268435456\n", 268435456, true, false},
		{"v1 unlimited", "9223372036854771712\n", 0, false, false},
		{"1 EiB and up is none", "1152921504606846976", 0, false, false},
		{"beyond int64", "18446744073709551615", 0, false, false},
		{"zero", "0", 0, true, false},
		{"spaces", "  1048576 \n", 1048576, true, false},
		{"empty", "", 0, false, true},
		{"garbage", "lots", 0, false, true},
		{"negative", "-1", 0, false, true},
		{"negative beyond int64", "-99999999999999999999", 0, false, true},
		{"unit suffix", "512M", 0, false, true},
		{"two numbers", "1 2", 0, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := parseCgroupLimit(c.in)
			if got != c.want || ok != c.ok || (err != nil) != c.err {
				t.Errorf("parseCgroupLimit(%q) = %d, %v, %v; want %d, %v, error %v", c.in, got, ok, err, c.want, c.ok, c.err)
			}
		})
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for _, c := range []struct {
		name    string
		fs      fstest.MapFS
		want    int64
		ok, err bool
	}{
		{"no cgroup files", fstest.MapFS{}, 0, false, false},
		{"v2, namespaced: the limit at the root of the mount", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("1073741824\n"),
		}, 1073741824, true, false},
		{"v2 max", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, 0, false, false},
		{"v2 nested: the smallest of the cgroup and its parents", fstest.MapFS{
			"proc/self/cgroup": file("0::/kubepods/pod1/orderd\n"),
			"sys/fs/cgroup/kubepods/pod1/orderd/memory.max": file("max\n"),
			"sys/fs/cgroup/kubepods/pod1/memory.max":        file("805306368\n"),
			"sys/fs/cgroup/kubepods/memory.max":             file("4294967296\n"),
		}, 805306368, true, false},
		{"v2 path outside the namespace: the root file", fstest.MapFS{
			"proc/self/cgroup":         file("0::/../../system.slice/docker-1.scope\n"),
			"sys/fs/cgroup/memory.max": file("268435456"),
		}, 268435456, true, false},
		{"v1 limit", fstest.MapFS{
			"proc/self/cgroup":                           file("12:pids:/\n4:memory:/docker/abc\n1:name=systemd:/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("536870912\n"),
		}, 536870912, true, false},
		{"v1 unlimited (this machine's case)", fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/process_api/c0f1\n0::/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, 0, false, false},
		{"v1 with cpu and memory on one hierarchy", fstest.MapFS{
			"proc/self/cgroup": file("3:cpu,memory:/a\n"),
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": file("104857600\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes":   file("9223372036854771712\n"),
		}, 104857600, true, false},
		{"v2 garbage", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("a lot\n"),
		}, 0, false, true},
		{"v1 garbage", fstest.MapFS{
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("\x00\x01"),
		}, 0, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := cgroupMemoryLimit(c.fs)
			if (ok && got != c.want) || ok != c.ok || (err != nil) != c.err {
				t.Errorf("cgroupMemoryLimit = %d, %v, %v; want %d, %v, error %v", got, ok, err, c.want, c.ok, c.err)
			}
		})
	}
}

// TestApplyMemoryLimit: 90% of a cgroup's limit becomes the runtime's
// limit and is logged; GOMEMLIMIT, when set, is left to the runtime.
func TestApplyMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	cgroup := fstest.MapFS{
		"proc/self/cgroup":         &fstest.MapFile{Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": &fstest.MapFile{Data: []byte("1000000000\n")},
	}
	logged := func(getenv func(string) string) map[string]any {
		var buf bytes.Buffer
		core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zap.InfoLevel)
		applyMemoryLimit(getenv, cgroup, zap.New(core))
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("log %q: %v", buf.String(), err)
		}
		return line
	}

	line := logged(func(string) string { return "" })
	if got := debug.SetMemoryLimit(-1); got != 900000000 {
		t.Errorf("limit %d, want 90%% of the cgroup's 1e9", got)
	}
	if line["from"] != "cgroup" || line["limit_bytes"] != float64(900000000) || line["cgroup_limit_bytes"] != float64(1e9) {
		t.Errorf("logged %v", line)
	}

	debug.SetMemoryLimit(before)
	line = logged(func(k string) string {
		if k == "GOMEMLIMIT" {
			return "512MiB"
		}
		return ""
	})
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("with GOMEMLIMIT set, the limit changed to %d", got)
	}
	if line["from"] != "GOMEMLIMIT" || line["GOMEMLIMIT"] != "512MiB" {
		t.Errorf("logged %v", line)
	}

	// No cgroup limit, or one that cannot be read: no limit, said so.
	for _, fs := range []fstest.MapFS{
		{"sys/fs/cgroup/memory.max": &fstest.MapFile{Data: []byte("max\n")}},
		{"sys/fs/cgroup/memory.max": &fstest.MapFile{Data: []byte("lots\n")}},
	} {
		cgroup = fs
		line = logged(func(string) string { return "" })
		if got := debug.SetMemoryLimit(-1); got != before || line["from"] != "none" {
			t.Errorf("memory.max %q: limit %d, logged %v; want none", fs["sys/fs/cgroup/memory.max"].Data, got, line)
		}
	}
}

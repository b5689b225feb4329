package config

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkLoadConfig100kLines decodes, checks and compiles a YAML file
// with 100,000 explicit line entries on 1,000 gateways.
func BenchmarkLoadConfig100kLines(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("peers:\n  - name: pbx\n    host: 192.0.2.1\n    auth: ip\ngateways:\n")
	for g := 0; g < 1000; g++ {
		fmt.Fprintf(&sb, "  - name: gw%d\n    domain: gw%d.example.net\n", g, g)
	}
	sb.WriteString("lines:\n")
	for g := 0; g < 1000; g++ {
		for n := 1; n <= 100; n++ {
			fmt.Fprintf(&sb, "  - gateway: gw%d\n    endpoint: aaln/%d\n    user: \"%d\"\n", g, n, 100000+g*100+n)
		}
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		cfg, err := Load("bench.yaml", data, testEnv)
		if err != nil {
			b.Fatal(err)
		}
		if len(cfg.Rules.Lines) != 100000 {
			b.Fatalf("%d lines", len(cfg.Rules.Lines))
		}
	}
}

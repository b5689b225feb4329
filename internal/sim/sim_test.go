package sim

import "testing"

func TestParseSimScript(t *testing.T) {
	steps, err := ParseScript("offhook 1; wait 1 L/dl # dial tone\ndial 1 1002\n\nrtp 2 50; sleep 20ms; restart")
	if err != nil || len(steps) != 6 || steps[2].arg != "1002" || steps[1].source != 1 || steps[2].source != 2 {
		t.Fatalf("%+v %v", steps, err)
	}
	steps, err = ParseScript("seize 3 5557000,2125550000; wait 3 answered; release 3; wait 3 armed; answer 4")
	if err != nil || len(steps) != 5 || steps[0].arg != "5557000,2125550000" || steps[0].line != 3 {
		t.Fatalf("%+v %v", steps, err)
	}
	for bad, want := range map[string]string{
		"offhook":         "script line 1: offhook takes 1 argument(s)",
		"ring 1":          `script line 1: unknown step "ring"`,
		"offhook x":       `script line 1: bad line number "x"`,
		"\nsleep soon":    `script line 2: bad duration "soon"`,
		"rtp 1 lots":      `script line 1: bad packet count "lots"`,
		"restart 1":       "script line 1: restart takes 0 argument(s)",
		"dial 1":          "script line 1: dial takes 2 argument(s)",
		"wait 0 L/dl":     `script line 1: bad line number "0"`,
		"onhook 1 2 3 4 ": "script line 1: onhook takes 1 argument(s)",
		"seize 3 12a4":    `script line 1: seize wants ADDR or ADDR,ANI in digits, not "12a4"`,
		"seize 3 1234,":   `script line 1: seize wants ADDR or ADDR,ANI in digits, not "1234,"`,
		"release 3 now":   "script line 1: release takes 1 argument(s)",
	} {
		if _, err := ParseScript(bad); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %s", bad, err, want)
		}
	}
}

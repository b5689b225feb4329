package mgcp

import (
	"errors"
	"testing"
)

func TestDigitMapMatch(t *testing.T) {
	const na = "(*xx|[2-9]xxx|9[2-9]xxxxxx|91[2-9]xx[2-9]xxxxxx|x.T)"
	const rfc = "(0T|00T|[1-7]xxx|8xxxxxxx|#xxxxxxx|*xx|91xxxxxxxxxx|9011x.T)"
	tests := []struct {
		name, dm, dialed string
		want             MatchResult
	}{
		{"empty string is partial", rfc, "", Partial},
		{"operator needs timer", rfc, "0", MatchAfterTimer},
		{"operator after timer", rfc, "0T", Match},
		{"double zero after timer", rfc, "00T", Match},
		{"extension partial", rfc, "12", Partial},
		{"extension complete", rfc, "1234", Match},
		{"too many digits", rfc, "12345", NoMatch},
		{"star code", rfc, "*72", Match},
		{"star code partial", rfc, "*7", Partial},
		{"hash prefix", rfc, "#1234567", Match},
		{"long distance", rfc, "912125551234", Match},
		{"international waits for timer", rfc, "9011442071234567", MatchAfterTimer},
		{"international timer expired", rfc, "9011442071234567T", Match},
		{"nine alone partial", rfc, "9", Partial},
		{"no pattern starts with 91x then letter", rfc, "91A", NoMatch},
		{"letter not in map", rfc, "A", NoMatch},
		{"invalid symbol", rfc, "1-2", NoMatch},
		{"ambiguous complete waits", na, "2017", MatchAfterTimer},
		{"ambiguous completes on timer", na, "2017T", Match},
		{"range mismatch", "[2-9]xxx", "1234", NoMatch},
		{"bracket set with hash", "[0-9#*T]", "#", Match},
		{"bracket timer", "[0-9#*T]", "T", Match},
		{"repeat zero times", "1x.2", "12", MatchAfterTimer},
		{"repeat many times", "1x.2", "1555", Partial},
		{"lower case x and letters", "(xa|b)", "5A", Match},
		{"short timer marker", "(1S|12)", "1", MatchAfterTimer},
		{"short timer marker fired", "(1S|12)", "1S", Match},
		{"long timer marker", "xxL", "12L", Match},
		{"unparenthesised", "1|2", "2", Match},
		{"timer on no match stays no match", "12", "1T", NoMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dm, err := CompileDigitMap(tt.dm)
			if err != nil {
				t.Fatal(err)
			}
			if got := dm.Match(tt.dialed); got != tt.want {
				t.Errorf("Match(%q) on %s = %v, want %v", tt.dialed, tt.dm, got, tt.want)
			}
		})
	}
}

func TestDigitMapCompileErrors(t *testing.T) {
	tests := []struct {
		dm     string
		offset int
		reason string
	}{
		{"", 0, "empty digit map"},
		{"()", 1, "empty digit map"},
		{"(12", 3, "missing ')'"},
		{"(1||2)", 3, "empty alternative"},
		{"(1|2|)", 5, "empty alternative"},
		{".1", 0, "'.' must follow a position"},
		{"1..", 2, "'.' repeated"},
		{"[1-", 0, "missing ']'"},
		{"[]", 1, "empty range"},
		{"[9-1]", 1, "range must be ascending digits"},
		{"(1|2%)", 4, "invalid character '%'"},
		{"((1))", 1, "nested parentheses"},
		{"[1!]", 2, "invalid character '!' in range"},
	}
	for _, tt := range tests {
		_, err := CompileDigitMap(tt.dm)
		var de *DigitMapError
		if !errors.As(err, &de) {
			t.Errorf("%q: got %v, want a DigitMapError", tt.dm, err)
			continue
		}
		if de.Offset != tt.offset || de.Reason != tt.reason {
			t.Errorf("%q: got offset %d %q, want %d %q", tt.dm, de.Offset, de.Reason, tt.offset, tt.reason)
		}
	}
}

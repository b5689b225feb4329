package mgcp

import "testing"

var (
	benchNTFY = []byte("NTFY 3003 aaln/1@rgw1.example.net MGCP 1.0\r\nN: ca@ca.example.net:2727\r\nX: 1a02\r\nO: D/2,D/0,D/1,D/7\r\n")
	benchCRCX = []byte("CRCX 601 aaln/2@rgw1.example.net MGCP 1.0\r\nC: 91D40A7E\r\nL: p:20, a:PCMU;PCMA\r\nM: inactive\r\nX: 2b01\r\nR: L/hd(N)\r\nS: L/ci(06/12/09/30,\"4085550100\",\"Front Desk\"), L/rg\r\n\r\n" +
		"v=0\r\no=pbx 7 7 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40010 RTP/AVP 0 8 101\r\n")
	benchResp = []byte("200 503 OK\r\nI: 4F21A7\r\n\r\nv=0\r\no=- 4F21A7 1 IN IP4 192.0.2.21\r\ns=-\r\nc=IN IP4 192.0.2.21\r\nt=0 0\r\nm=audio 16384 RTP/AVP 0 8\r\na=ptime:20\r\n")
)

func benchParse(b *testing.B, data []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseNTFY(b *testing.B)        { benchParse(b, benchNTFY) }
func BenchmarkParseCRCX(b *testing.B)        { benchParse(b, benchCRCX) }
func BenchmarkParseResponseSDP(b *testing.B) { benchParse(b, benchResp) }

func benchSerialize(b *testing.B, data []byte) {
	m, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = m.AppendTo(buf[:0])
	}
}

func BenchmarkSerializeNTFY(b *testing.B)        { benchSerialize(b, benchNTFY) }
func BenchmarkSerializeCRCX(b *testing.B)        { benchSerialize(b, benchCRCX) }
func BenchmarkSerializeResponseSDP(b *testing.B) { benchSerialize(b, benchResp) }

func BenchmarkDigitMapMatch(b *testing.B) {
	dm, err := CompileDigitMap("(0T|00T|[1-7]xxx|8xxxxxxx|#xxxxxxx|*xx|91xxxxxxxxxx|9011x.T)")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if dm.Match("912125551234") != Match {
			b.Fatal("no match")
		}
	}
}

func BenchmarkDigitMapCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CompileDigitMap("(0T|00T|[1-7]xxx|8xxxxxxx|#xxxxxxx|*xx|91xxxxxxxxxx|9011x.T)"); err != nil {
			b.Fatal(err)
		}
	}
}

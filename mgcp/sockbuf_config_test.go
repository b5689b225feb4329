package mgcp

import (
	"strings"
	"testing"
)

func TestSocketBufferDefaultsAndValidation(t *testing.T) {
	if d := (Config{}).WithDefaults(); d.SocketBuffer != DefaultSocketBuffer {
		t.Errorf("default socket_buffer %d, want %d", d.SocketBuffer, DefaultSocketBuffer)
	}
	for _, ok := range []int{-1, MinSocketBuffer, 8 << 20, MaxSocketBuffer} {
		if err := (Config{SocketBuffer: ok}).Validate(); err != nil {
			t.Errorf("socket_buffer %d: %v", ok, err)
		}
	}
	for _, bad := range []int{-2, 1, MinSocketBuffer - 1, MaxSocketBuffer + 1} {
		err := (Config{SocketBuffer: bad}).Validate()
		if err == nil || !strings.Contains(err.Error(), "mgcp.socket_buffer: must be -1") {
			t.Errorf("socket_buffer %d: %v", bad, err)
		}
	}
}

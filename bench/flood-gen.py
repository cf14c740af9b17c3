#!/usr/bin/env python3
"""The attackers of bench/sip-flood.sh (run inside the attacker namespace).

  flood-gen.py flood SRC DST:PORT PPS SECONDS
      INVITEs and REGISTERs (half each, a new Call-ID every time, an ordinary
      User-Agent) from SRC at PPS datagrams per second.
  flood-gen.py sweep SRC NET/24 PORTS PPS SECONDS
      OPTIONS with User-Agent "friendly-scanner" (sipvicious' svmap) to every
      address of NET/24 on each of PORTS (comma separated), round after round.

Prints the number of datagrams sent. Sends in bursts every millisecond, so the
rate holds without a syscall per sleep.
"""
import socket
import sys
import time


def invite(src, port, dst, n):
    body = ("v=0\r\no=atk 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n") % (src, src)
    return ("INVITE sip:%d@%s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKf%d\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:flood@%s>;tag=f%d\r\n"
            "To: <sip:%d@%s>\r\n"
            "Call-ID: flood-%d@%s\r\n"
            "CSeq: 1 INVITE\r\n"
            "Contact: <sip:flood@%s:%d>\r\n"
            "User-Agent: Linphone/3.6\r\n"
            "Content-Type: application/sdp\r\n"
            "Content-Length: %d\r\n\r\n%s") % (
        n, dst, src, port, n, src, n, n, dst, n, src, src, port, len(body), body)


def register(src, port, dst, n):
    return ("REGISTER sip:%s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKr%d\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:u%d@%s>;tag=r%d\r\n"
            "To: <sip:u%d@%s>\r\n"
            "Call-ID: reg-%d@%s\r\n"
            "CSeq: 1 REGISTER\r\n"
            "Contact: <sip:u%d@%s:%d>\r\n"
            "Expires: 3600\r\n"
            "User-Agent: Linphone/3.6\r\n"
            "Content-Length: 0\r\n\r\n") % (dst, src, port, n, n, dst, n, n, dst, n, src, n, src, port)


def options(src, port, dst, n):
    return ("OPTIONS sip:100@%s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKs%d\r\n"
            "Max-Forwards: 70\r\n"
            "From: \"sipvicious\" <sip:100@1.1.1.1>;tag=s%d\r\n"
            "To: \"sipvicious\" <sip:100@1.1.1.1>\r\n"
            "Call-ID: sweep-%d\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Contact: <sip:100@%s:%d>\r\n"
            "Accept: application/sdp\r\n"
            "User-Agent: friendly-scanner\r\n"
            "Content-Length: 0\r\n\r\n") % (dst, src, port, n, n, n, src, port)


def paced(pps, seconds, send_one):
    start = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic() - start
        if now >= seconds:
            return sent
        due = int(now * pps)
        while sent < due:
            try:
                send_one(sent)
            except OSError:
                pass  # ENOBUFS, unreachable neighbours: an attacker does not care
            sent += 1
        time.sleep(0.001)


def main():
    mode, src = sys.argv[1], sys.argv[2]
    socks = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setblocking(False)
        socks.append((s, s.getsockname()[1]))
    if mode == "flood":
        host, port = sys.argv[3].rsplit(":", 1)
        dst = (host, int(port))
        pps, seconds = float(sys.argv[4]), float(sys.argv[5])

        def one(n):
            s, p = socks[n % len(socks)]
            make = invite if n % 2 == 0 else register
            s.sendto(make(src, p, host, n).encode(), dst)
        print(paced(pps, seconds, one))
    elif mode == "sweep":
        net = sys.argv[3].split("/")[0].rsplit(".", 1)[0]
        ports = [int(p) for p in sys.argv[4].split(",")]
        pps, seconds = float(sys.argv[5]), float(sys.argv[6])
        targets = [("%s.%d" % (net, h), p) for h in range(1, 255) for p in ports]

        def one(n):
            s, p = socks[n % len(socks)]
            t = targets[n % len(targets)]
            s.sendto(options(src, p, t[0], n).encode(), t)
        print(paced(pps, seconds, one))
    else:
        sys.exit("mode: flood or sweep")


if __name__ == "__main__":
    main()

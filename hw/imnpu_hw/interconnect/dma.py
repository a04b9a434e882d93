"""Per-cluster DMA engine: runs a cluster *job* over an AXI4 manager port.

A job is three steps, each optional but the second:

1. the input copy: ``in_words`` words from system memory at byte address
   ``in_src`` into the activation memory at word ``in_dst``;
2. the descriptor list at byte address ``desc_ptr``: the cluster runs it and
   its ``mem_req`` reads (descriptors, weights, parameters) become AXI bursts;
3. the output copy: ``out_words`` words from activation word ``out_src`` to
   system memory at byte address ``out_dst``.

Bursts are INCR, 32-bit beats, at most 256 beats and never across a 4 KiB
boundary; one read burst and one write burst are outstanding at a time. A
read answered SLVERR/DECERR still delivers every beat (flagged) and ends the
job with ``MEM_ERROR``; a write answered so ends it with ``WRITE_ERROR``. The
engine never waits on anything but the AXI handshakes and the cluster.
"""

from amaranth.lib import enum

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..cluster.cluster import MemRequest, MemResponse
from ..cluster.descriptor import ClusterError
from ..macro.dimc_tile import BusRequest, BusResponse
from ..params import positive_int
from .axi import AXI4Signature, AXIBurst

__all__ = ["JobError", "Job", "ClusterDMA"]

#: most beats of one burst (AXI4 INCR) and the 4 KiB boundary bursts may not cross
MAX_BEATS = 256
BOUNDARY_WORDS = 1024


class JobError(enum.Enum, shape=4):
    """``STATUS.ERROR``: the cluster's :class:`ClusterError` codes and the DMA's own."""
    NONE = 0
    BAD_KIND = 1
    ZERO_DIM = 2
    BAD_TYPE = 3
    BAD_LANE = 4
    KERNEL_TOO_LARGE = 5
    BAD_SHAPE = 6
    BAD_MAPPING = 7
    ACT_OVERFLOW = 8
    OVERLAP = 9
    MEM_ERROR = 10        #: a read (descriptor, weights, parameters, input copy) failed
    WRITE_ERROR = 11      #: an output-copy write failed
    BAD_COPY = 12         #: a copy runs past the activation memory


assert all(JobError[e.name].value == e.value for e in ClusterError)


class Job(data.Struct):
    """A job's registers (``docs/registers.md``): byte addresses in system memory,
    word addresses and counts in the activation memory."""
    desc_ptr: 32
    in_src: 32
    in_dst: 32
    in_words: 32
    out_src: 32
    out_dst: 32
    out_words: 32


#: AxCACHE of every burst: normal memory, bufferable and modifiable
CACHE = 0b0011


def _burst_request(m, axi, ch, word_addr, words_left):
    """Drive the address channel ``ch`` (``"ar"``/``"aw"``) for the next burst of
    ``words_left`` words from system word ``word_addr``; returns its beats."""
    beats = _burst_beats(m, word_addr, words_left, ch)
    m.d.comb += [
        getattr(axi, f"{ch}addr").eq(Cat(Const(0, 2), word_addr)),
        getattr(axi, f"{ch}len").eq(beats - 1),
        getattr(axi, f"{ch}size").eq(2),                  # 4-byte beats
        getattr(axi, f"{ch}burst").eq(AXIBurst.INCR),
        getattr(axi, f"{ch}cache").eq(CACHE),
    ]
    return beats


def _burst_beats(m, word_addr, words_left, name):
    """Beats of the next burst from ``word_addr``: at most 256, not past 4 KiB."""
    to_boundary = Signal(range(BOUNDARY_WORDS + 1), name=f"{name}_to_boundary")
    beats = Signal(range(MAX_BEATS + 1), name=f"{name}_beats")
    m.d.comb += to_boundary.eq(BOUNDARY_WORDS - word_addr[:ceil_log2(BOUNDARY_WORDS)])
    with m.If((words_left <= MAX_BEATS) & (words_left <= to_boundary)):
        m.d.comb += beats.eq(words_left)
    with m.Elif(to_boundary < MAX_BEATS):
        m.d.comb += beats.eq(to_boundary)
    with m.Else():
        m.d.comb += beats.eq(MAX_BEATS)
    return beats


class ClusterDMA(wiring.Component):
    """The DMA engine and job sequencer of one cluster.

    Parameters
    ----------
    act_words : int
        Words of the cluster's activation memory (copies past it are refused).
    act_addr_bits : int
        Width of the cluster's ``act`` port address.
    id_width : int
        AXI ID width of ``axi`` (IDs are driven 0; the arbiter assigns its own).

    Members
    -------
    start : ``In(1)``
        Pulse while idle: run ``job``.
    job : ``In(Job)``
        Sampled at ``start``.
    busy, done : ``Out(1)``
        ``done`` pulses when the job ends.
    error : ``Out(JobError)``
    cycles : ``Out(32)``
        Cycles of the last job (counting while busy).
    axi : ``Out(AXI4Signature)``
    cl_start, cl_desc_addr, cl_done, cl_error
        Drive and watch the cluster's ``start``/``desc_addr``/``done``/``error_code``.
    mem_req, mem_resp
        The cluster's system-memory port, served with AXI reads.
    act, act_resp
        The cluster's activation-memory port, used by the copies. Its requests are
        registers (a beat's word is written a cycle after the beat); ``act_resp`` answers
        a read the cycle after the request, as the cluster does.
    """

    def __init__(self, *, act_words, act_addr_bits, id_width=1):
        positive_int("act_words", act_words)
        positive_int("act_addr_bits", act_addr_bits)
        if act_words > 1 << act_addr_bits:
            raise ValueError(f"act_words {act_words} does not fit act_addr_bits {act_addr_bits}")
        self._act_words = act_words
        super().__init__({
            "start": In(1),
            "job": In(Job),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(JobError),
            "cycles": Out(32),
            "axi": Out(AXI4Signature(addr_width=32, data_width=32, id_width=id_width)),
            "cl_start": Out(1),
            "cl_desc_addr": Out(32),
            "cl_done": In(1),
            "cl_error": In(ClusterError),
            "mem_req": In(stream.Signature(MemRequest)),
            "mem_resp": Out(stream.Signature(MemResponse)),
            "act": Out(stream.Signature(BusRequest(act_addr_bits, 32))),
            "act_resp": In(wiring.Signature({"valid": Out(1), "payload": Out(BusResponse(32))})),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        job = Signal(Job)
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # -- read engine: (word address, words) -> bursts -> beats to a sink ------------
        rd_addr = Signal(30)
        rd_left = Signal(32)
        rd_beats = Signal(range(MAX_BEATS + 1))
        rd_error = Signal()          # sticky over one command
        rd_cmd = Signal()            # pulse: start a command (rd_addr/rd_left set by the caller)
        rd_idle = Signal()
        rd_data = Signal()           # in a burst's data phase
        sink_ready = Signal()
        beat = Signal()              # a beat is delivered this cycle
        beats = _burst_request(m, axi, "ar", rd_addr, rd_left)
        m.d.comb += beat.eq(axi.rvalid & axi.rready)
        with m.FSM(name="rd"):
            with m.State("IDLE"):
                m.d.comb += rd_idle.eq(1)
                with m.If(rd_cmd):
                    m.next = "AR"
            with m.State("AR"):
                with m.If(rd_left == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += axi.arvalid.eq(1)
                    with m.If(axi.arready):
                        m.d.sync += [rd_beats.eq(beats), rd_addr.eq(rd_addr + beats),
                                     rd_left.eq(rd_left - beats)]
                        m.next = "R"
            with m.State("R"):
                m.d.comb += [axi.rready.eq(sink_ready), rd_data.eq(1)]
                with m.If(beat):
                    m.d.sync += rd_beats.eq(rd_beats - 1)
                    with m.If(axi.rresp[1]):
                        m.d.sync += rd_error.eq(1)
                    with m.If(rd_beats == 1):
                        m.next = "AR"

        # -- write engine: activation words -> bursts ---------------------------------------
        wr_sys = Signal(30)          # system word address of the next burst
        wr_left = Signal(32)         # words not yet in a burst
        wr_act = Signal(32)          # next activation word to fetch
        wr_fetch = Signal(range(MAX_BEATS + 1))   # words of this burst still to fetch
        wr_beats = Signal(range(MAX_BEATS + 1))   # beats of this burst still to send
        wr_error = Signal()
        wr_cmd = Signal()
        wr_idle = Signal()
        # an activation word arrives two cycles after its fetch (the request's register
        # below, then the block RAM): six words keep the bursts at a word per cycle
        buf = fifo.SyncFIFO(width=32, depth=6)
        m.submodules.wbuf = buf
        in_flight = Signal(2)        # activation reads issued one and two cycles ago
        fetch = Signal()
        wbeats = _burst_request(m, axi, "aw", wr_sys, wr_left)
        m.d.comb += [
            axi.wdata.eq(buf.r_data), axi.wstrb.eq(0xF), axi.wlast.eq(wr_beats == 1),
            buf.w_data.eq(self.act_resp.payload.data),
        ]
        m.d.sync += in_flight.eq(Cat(fetch, in_flight[0]))
        m.d.comb += buf.w_en.eq(in_flight[1])
        # at most depth - 1 words held or on their way, so a fetched word always fits
        m.d.comb += fetch.eq((wr_fetch != 0) &
                             (buf.level + in_flight[0] + in_flight[1] < buf.depth - 1))
        with m.FSM(name="wr"):
            with m.State("IDLE"):
                m.d.comb += wr_idle.eq(1)
                with m.If(wr_cmd):
                    m.next = "AW"
            with m.State("AW"):
                with m.If(wr_left == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += axi.awvalid.eq(1)
                    with m.If(axi.awready):
                        m.d.sync += [wr_beats.eq(wbeats), wr_fetch.eq(wbeats),
                                     wr_sys.eq(wr_sys + wbeats), wr_left.eq(wr_left - wbeats)]
                        m.next = "W"
            with m.State("W"):
                m.d.comb += [axi.wvalid.eq(buf.r_rdy), buf.r_en.eq(axi.wready)]
                with m.If(fetch):
                    m.d.sync += [wr_fetch.eq(wr_fetch - 1), wr_act.eq(wr_act + 1)]
                with m.If(axi.wvalid & axi.wready):
                    m.d.sync += wr_beats.eq(wr_beats - 1)
                    with m.If(wr_beats == 1):
                        m.next = "B"
            with m.State("B"):
                m.d.comb += axi.bready.eq(1)
                with m.If(axi.bvalid):
                    with m.If(axi.bresp[1]):
                        m.d.sync += wr_error.eq(1)
                    m.next = "AW"

        # -- job sequencer -----------------------------------------------------------------
        act_ptr = Signal(32)
        m.d.comb += self.cl_desc_addr.eq(job.desc_ptr[2:])
        # The copy-range checks are free-running registers of the job port: in
        # CHECK they hold the checks of the job taken with ``start`` (an add and a
        # compare in CHECK itself ended in rd_left's select, 20.2 ns routed on the
        # `fpga` self-test). The 33-bit sums cannot wrap.
        bad_in, bad_out = Signal(), Signal()
        m.d.sync += [
            bad_in.eq((self.job.in_words != 0) &
                      (self.job.in_dst + self.job.in_words > self._act_words)),
            bad_out.eq((self.job.out_words != 0) &
                       (self.job.out_src + self.job.out_words > self._act_words)),
        ]
        # the copies use the activation port; nothing else does while the job runs. The
        # port's request is a register: from the job state through the port multiplexers
        # to the activation block RAMs was 20.6 ns routed on the `fpga` self-test
        act = self.act
        m.d.sync += act.valid.eq(0)
        with m.FSM(name="job"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [job.eq(self.job), self.busy.eq(1), self.cycles.eq(0),
                                 self.error.eq(JobError.NONE)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(bad_in | bad_out):
                    m.d.sync += self.error.eq(JobError.BAD_COPY)
                    m.next = "END"
                with m.Else():
                    m.d.sync += [rd_addr.eq(job.in_src[2:]), rd_left.eq(job.in_words),
                                 rd_error.eq(0), act_ptr.eq(job.in_dst)]
                    m.d.comb += rd_cmd.eq(1)
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += sink_ready.eq(1)
                with m.If(beat):
                    m.d.sync += [act_ptr.eq(act_ptr + 1),
                                 act.valid.eq(1), act.payload.addr.eq(act_ptr),
                                 act.payload.write.eq(1), act.payload.data.eq(axi.rdata)]
                with m.If(rd_idle & ~rd_cmd):
                    with m.If(rd_error):
                        m.d.sync += self.error.eq(JobError.MEM_ERROR)
                        m.next = "END"
                    with m.Else():
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.cl_start.eq(1)
                m.next = "RUN_WAIT"
            with m.State("RUN_WAIT"):
                # the cluster's memory reads: one request at a time, answered in order
                m.d.comb += [
                    sink_ready.eq(self.mem_resp.ready),
                    self.mem_resp.valid.eq(axi.rvalid & rd_data),
                    self.mem_resp.payload.data.eq(axi.rdata),
                    self.mem_resp.payload.error.eq(axi.rresp[1]),
                    self.mem_req.ready.eq(rd_idle),
                ]
                with m.If(self.mem_req.valid & rd_idle):
                    m.d.sync += [rd_addr.eq(self.mem_req.payload.addr),
                                 rd_left.eq(self.mem_req.payload.length)]
                    m.d.comb += rd_cmd.eq(1)
                with m.If(self.cl_done):
                    m.d.sync += [self.error.as_value().eq(self.cl_error.as_value()),
                                 wr_sys.eq(job.out_dst[2:]), wr_left.eq(job.out_words),
                                 wr_act.eq(job.out_src), wr_error.eq(0)]
                    with m.If(self.cl_error == ClusterError.NONE):
                        m.next = "STORE"
                    with m.Else():
                        m.next = "END"
            with m.State("STORE"):
                m.d.comb += wr_cmd.eq(1)
                m.next = "STORE_WAIT"
            with m.State("STORE_WAIT"):
                m.d.sync += [act.valid.eq(fetch), act.payload.addr.eq(wr_act),
                             act.payload.write.eq(0)]
                with m.If(wr_idle):
                    with m.If(wr_error):
                        m.d.sync += self.error.eq(JobError.WRITE_ERROR)
                    m.next = "END"
            with m.State("END"):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                m.next = "IDLE"
        return m

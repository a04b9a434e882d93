"""Elaboration-time errors of the interconnect and top-level blocks name the parameter."""

import dataclasses

import pytest

from imnpu_hw import get_config
from imnpu_hw.interconnect.arbiter import AXI4Arbiter
from imnpu_hw.interconnect.axi import AXI4LiteSignature, AXI4Signature, flat_members
from imnpu_hw.interconnect.dma import ClusterDMA
from imnpu_hw.top import IMNPU
from imnpu_hw.top.control import ControlSlave


@pytest.mark.parametrize("kwargs, message", [
    (dict(data_width=16), "data_width"),
    (dict(addr_width=0), "addr_width"),
    (dict(id_width=0), "id_width"),
])
def test_axi4_signature_errors(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        AXI4Signature(**kwargs)


def test_axil_signature_error():
    with pytest.raises(ValueError, match="data_width"):
        AXI4LiteSignature(data_width=8)


def test_flat_names_are_conventional():
    members = flat_members("m_axi", AXI4Signature(id_width=3), manager=True)
    assert {"m_axi_awaddr", "m_axi_arlen", "m_axi_rlast", "m_axi_bid", "m_axi_wstrb"} <= set(members)
    assert members["m_axi_awaddr"].flow.name == "Out" and members["m_axi_rdata"].flow.name == "In"
    sub = flat_members("s_axil", AXI4LiteSignature(), manager=False)
    assert sub["s_axil_awaddr"].flow.name == "In" and sub["s_axil_rdata"].flow.name == "Out"


@pytest.mark.parametrize("kwargs, message", [
    (dict(act_words=0, act_addr_bits=4), "act_words"),
    (dict(act_words=4, act_addr_bits=0), "act_addr_bits"),
    (dict(act_words=32, act_addr_bits=4), "act_words 32"),
])
def test_dma_errors(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        ClusterDMA(**kwargs)


def test_arbiter_error():
    with pytest.raises((TypeError, ValueError), match="managers"):
        AXI4Arbiter(0)


def test_top_errors():
    with pytest.raises(TypeError, match="config"):
        IMNPU("fpga")
    with pytest.raises(TypeError, match="config"):
        ControlSlave({"C": 1})
    too_many = dataclasses.replace(get_config("tiny"), C=33)
    with pytest.raises(ValueError, match="C = 33"):
        ControlSlave(too_many)
    too_big = dataclasses.replace(get_config("tiny"), A=1 << 20)
    with pytest.raises(ValueError, match="A = "):
        ControlSlave(too_big)


def test_signature_equality_and_repr():
    assert AXI4Signature(id_width=2) == AXI4Signature(id_width=2)
    assert AXI4Signature(id_width=2) != AXI4Signature(id_width=3)
    assert AXI4LiteSignature() != AXI4Signature()
    assert repr(AXI4Signature(id_width=3)) == \
        "AXI4Signature(addr_width=32, data_width=32, id_width=3)"

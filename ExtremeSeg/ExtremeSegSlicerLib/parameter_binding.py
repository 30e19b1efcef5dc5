"""Binding the panel's widgets to its parameter node so that every connection can be undone, on Slicer 5.8 and later.

Slicer's parameter node wrapper offers ``connectGui(ui)`` and ``disconnectGui(tag)``. In Slicer 5.8
``connectGui`` returns no tag (fixed in 5.10: "BUG: Fix not returning GUI tag after connection"), so
``disconnectGui(None)`` does nothing and every module entry adds one more set of connectors. The public
``connectParametersToGui(mapping)``, which ``connectGui`` calls, has returned its tag since the wrapper
gained GUI connections; :class:`ParameterNodeBinding` uses it and remembers which wrapper the tag belongs to.
Each such call also adds a ModifiedEvent observer to the node that ``disconnectGui`` leaves in place, so the
panel connects once per parameter node (:class:`WrapperCache` keeps one wrapper per node), not per entry.
Headless: works on whatever has those two methods.
"""

from __future__ import annotations

#: the Qt property naming a widget's parameter (``slicer.parameterNodeWrapper.SlicerParameterNamePropertyName``)
PARAMETER_PROPERTY = "SlicerParameterName"


def bound_widgets(ui) -> dict:
    """Parameter name -> widget for every widget of ``ui`` (``slicer.util.childWidgetVariables``) that names one."""
    widgets = {}
    for widget in vars(ui).values():
        name = widget.property(PARAMETER_PROPERTY) if hasattr(widget, "property") else None
        if name:
            widgets[str(name)] = widget
    return widgets


class ParameterNodeBinding:
    """At most one live connection between a set of widgets and one parameter node wrapper.

    ``mapping``: parameter name -> widget (or a GUI connector, e.g. one that shows an unset path as empty).
    """

    def __init__(self, mapping: dict):
        self.mapping = dict(mapping)
        self.wrapper = None
        self._tag = None

    @property
    def connected(self) -> bool:
        return self.wrapper is not None

    def connect(self, wrapper) -> None:
        """Connect the widgets to ``wrapper`` (``None``: to nothing), dropping the previous connection first.

        Connecting the wrapper that is already connected does nothing (no second set of connectors).
        """
        if wrapper is not None and wrapper is self.wrapper:
            return
        self.disconnect()
        if wrapper is not None:
            self._tag = wrapper.connectParametersToGui(dict(self.mapping))
            self.wrapper = wrapper

    def disconnect(self) -> None:
        """Undo the connection made by :meth:`connect`, if any."""
        if self.wrapper is not None:
            self.wrapper.disconnectGui(self._tag)
        self.wrapper, self._tag = None, None


class WrapperCache:
    """One parameter node wrapper per parameter node: a module entry reuses the wrapper of the same node."""

    def __init__(self, wrapper_class):
        self.wrapper_class = wrapper_class
        self._wrapper = None

    def wrapper_for(self, parameter_node):
        """The wrapper of ``parameter_node`` (``None`` for none), made once and kept while it is the same node."""
        if parameter_node is None:
            return None
        if self._wrapper is None or self._wrapper.parameterNode is not parameter_node:
            self._wrapper = self.wrapper_class(parameter_node)
        return self._wrapper

"""CT viewer: three linked slice views with truth/prediction overlays (napari-style split).

``model.py`` holds the state and its Qt signals, ``overlay.py`` turns mask slices into RGBA,
``slice_view.py`` draws one orientation, ``controls.py`` the side panel, and ``widget.py``
puts them together as :class:`~app.viewer.widget.ViewerWidget` for the main window.
"""
